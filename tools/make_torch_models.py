"""Regenerate the exported models in tests/models/ (needs torch; onnxscript for
the dynamo exporter).  The tests compare fastlstm with onnxruntime on them live,
so only the .onnx files are committed.

    pip install torch==2.13.0 onnxscript && python tools/make_torch_models.py

Each model is small (input 8, hidden 12) and has dynamic batch and time axes.

    python tools/make_torch_models.py --tasks [--task crnn speech kws char s2s]
                                      [--train-seconds 60]

makes the task models of tests/models/tasks (see ``make_tasks``): a CRNN text
reader, a DeepSpeech-2-like speech model, a keyword spotter, a one-step char
LM with state in and out, and an encoder-decoder with attention (encoder,
decoder step, and the greedy decoder scripted into one graph with a Loop),
through both exporters where they work.  The CRNN, the char LM and the
encoder-decoder train for ``--train-seconds`` each on synthetic data first.
The BiLSTM of the CRNN has H=128, not 256: at 256 its weights alone are
9.4 MB per file.  The committed files were trained on a machine shared by many
jobs: the CRNN for 1200 s (``--task crnn --train-seconds 1200``: about 1200
steps; it reads rendered digit strings), the char LM for 150 s (it continues
its text in part) and the encoder-decoder for 600 s (about 20000 steps on a
quieter machine: it reverses most random 3-8 digit strings, 15 of the test's 20).
"""
import argparse
import os
import warnings

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "models")
I, H, V, C = 8, 12, 30, 5


class Classifier(nn.Module):
    """[embedding] -> stacked recurrent layers -> last step or mean -> Linear -> (Log)Softmax."""

    def __init__(self, kind, layers, bidir, batch_first, embed=False, pool="last",
                 head="logsoftmax", state_io=False, nonlinearity="tanh"):
        super().__init__()
        self.embed = nn.Embedding(V, I) if embed else None
        kw = {"nonlinearity": nonlinearity} if kind == "RNN" else {}
        self.rnn = getattr(nn, kind)(I, H, num_layers=layers, bidirectional=bidir,
                                     batch_first=batch_first,
                                     dropout=0.3 if layers > 1 else 0.0, **kw)
        self.fc = nn.Linear(H * (2 if bidir else 1), C)
        self.kind, self.bf, self.pool, self.head, self.state_io = kind, batch_first, pool, \
            head, state_io

    def forward(self, x, *state):
        if self.embed is not None:
            x = self.embed(x)
        if self.state_io:
            st = tuple(state) if self.kind == "LSTM" else state[0]
            out, hn = self.rnn(x, st)
        else:
            out, hn = self.rnn(x)
        y = (out[:, -1] if self.bf else out[-1]) if self.pool == "last" else \
            out.mean(dim=1 if self.bf else 0)
        y = self.fc(y)
        y = torch.log_softmax(y, -1) if self.head == "logsoftmax" else torch.softmax(y, -1)
        if self.state_io:
            return (y,) + (tuple(hn) if self.kind == "LSTM" else (hn,))
        return y


class Packed(nn.Module):
    """pack_padded_sequence -> recurrent layer -> pad_packed_sequence -> Linear."""

    def __init__(self, kind, bidir, batch_first):
        super().__init__()
        self.rnn = getattr(nn, kind)(I, H, bidirectional=bidir, batch_first=batch_first)
        self.fc = nn.Linear(H * (2 if bidir else 1), C)
        self.bf = batch_first
        self.kind = kind

    def forward(self, x, lens):
        p = pack_padded_sequence(x, lens, batch_first=self.bf, enforce_sorted=False)
        out, hn = self.rnn(p)
        out, _ = pad_packed_sequence(out, batch_first=self.bf)
        h = hn[0] if self.kind == "LSTM" else hn
        return self.fc(out), h


MODELS = {
    # name: (module, opset, inputs: "seq" | "tokens" | "seq+state" | "packed")
    "lstm_2layer_bidir_opset17": (lambda: Classifier("LSTM", 2, True, False), 17, "seq"),
    "gru_embed_batchfirst_mean_softmax_opset14": (
        lambda: Classifier("GRU", 1, False, True, embed=True, pool="mean", head="softmax"),
        14, "tokens"),
    "rnn_3layer_bidir_state_io_opset15": (
        lambda: Classifier("RNN", 3, True, False, state_io=True, nonlinearity="relu"), 15,
        "seq+state"),
    "lstm_batchfirst_state_io_opset16": (
        lambda: Classifier("LSTM", 1, False, True, state_io=True), 16, "seq+state"),
    "gru_2layer_bidir_batchfirst_opset14": (
        lambda: Classifier("GRU", 2, True, True, pool="mean"), 14, "seq"),
    "lstm_packed_bidir_opset17": (lambda: Packed("LSTM", True, False), 17, "packed"),
    "gru_packed_batchfirst_opset16": (lambda: Packed("GRU", False, True), 16, "packed"),
    # (a 3-layer LSTM through the dynamo exporter of torch 2.13 bakes the export-time
    # sequence length into a Reshape, so onnxruntime fails at any other length too;
    # it is left out)
    "gru_bidir_dynamo": (lambda: Classifier("GRU", 1, True, True), None, "seq"),
}


def export(name, make, opset, kind):
    torch.manual_seed(hash(name) % 1000)
    m = make().eval()
    bf = getattr(m, "bf", False)
    T, B = 6, 3
    if kind == "tokens":
        args = (torch.randint(0, V, (B, T) if bf else (T, B)),)
    else:
        args = (torch.randn((B, T, I) if bf else (T, B, I)),)
    names = ["x"]
    dyn = {"x": {0: "batch", 1: "seq"} if bf else {0: "seq", 1: "batch"}}
    outs = ["y"]
    if kind == "seq+state":
        L = m.rnn.num_layers * (2 if m.rnn.bidirectional else 1)
        n_state = 2 if m.kind == "LSTM" else 1
        args += tuple(torch.zeros(L, B, H) for _ in range(n_state))
        names += ["h0", "c0"][:n_state]
        for n in names[1:]:
            dyn[n] = {1: "batch"}
        outs += ["hn", "cn"][:n_state]
    if kind == "packed":
        args += (torch.tensor([T, 2, 4]),)
        names.append("lengths")
        dyn["lengths"] = {0: "batch"}
        outs = ["y", "h_last"]
    path = os.path.join(OUT, name + ".onnx")
    if opset is None:
        shapes = {n: {ax: torch.export.Dim(d, min=1, max=64) for ax, d in axes.items()}
                  for n, axes in dyn.items()}
        torch.onnx.export(m, args, path, input_names=names, output_names=outs,
                          dynamic_shapes=tuple(shapes[n] for n in names), dynamo=True,
                          external_data=False)
    else:
        torch.onnx.export(m, args, path, input_names=names, output_names=outs,
                          dynamic_axes=dict(dyn, **{o: {} for o in outs}),
                          opset_version=opset, dynamo=False)
    print(f"wrote {os.path.relpath(path)}")


# ----------------------------------------------------------------------------
# Task models (tests/models/tasks/): the shapes recurrent nets are deployed in.
# Each is exported with the TorchScript exporter (opset 17) and, where it
# works, the dynamo exporter; the small ones are trained here for about a
# minute on synthetic data so that their outputs mean something.

TASKS = os.path.join(OUT, "tasks")

#: CRNN classes: 0 is the CTC blank, then the 95 printable ASCII characters
CRNN_CHARS = "".join(chr(c) for c in range(32, 127))

from digit_font import render_digits  # noqa: E402  (numpy only; the tests use it too)


class CRNN(nn.Module):
    """Conv2d+BatchNorm+ReLU/SiLU+MaxPool blocks over 1x32xW, 2-layer BiLSTM,
    Linear over the classes, LogSoftmax: [T=W/4, B, classes]."""

    def __init__(self, hidden=128, classes=len(CRNN_CHARS) + 1):
        super().__init__()

        def block(i, o, act, pool):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), act, nn.MaxPool2d(pool)]

        self.features = nn.Sequential(
            *block(1, 32, nn.ReLU(), (2, 2)), *block(32, 64, nn.SiLU(), (2, 2)),
            *block(64, 96, nn.ReLU(), (2, 1)), *block(96, 128, nn.ReLU(), (4, 1)))
        self.rnn = nn.LSTM(128, hidden, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, image):
        f = self.features(image)                 # [B, 128, 1, W/4]
        f = f.squeeze(2).permute(2, 0, 1)        # [T, B, 128]
        y, _ = self.rnn(f)
        return torch.log_softmax(self.fc(y), -1)


class Speech(nn.Module):
    """DeepSpeech-2-like: Conv2d front end over a [B, 1, 64, frames] spectrogram
    (time stride 2), 3 BiGRU layers, Linear, LogSoftmax: [frames/2, B, 29]."""

    def __init__(self, hidden=128, classes=29):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 8, (11, 5), stride=(2, 2), padding=(5, 2)), nn.BatchNorm2d(8),
            nn.Hardtanh(0, 20),
            nn.Conv2d(8, 8, (11, 5), stride=(2, 1), padding=(5, 2)), nn.BatchNorm2d(8),
            nn.Hardtanh(0, 20))
        self.rnn = nn.GRU(8 * 16, hidden, num_layers=3, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, spec):
        f = self.conv(spec)                      # [B, 8, 16, T]
        B, C, F, T = f.shape
        f = f.reshape(B, C * F, T).permute(2, 0, 1)
        y, _ = self.rnn(f)
        return torch.log_softmax(self.fc(y), -1)


class KWS(nn.Module):
    """Keyword spotter: Conv1d over [B, 40, frames] MFCCs, GRU, Linear on the
    last step: [B, 12] log-probabilities."""

    def __init__(self, hidden=64, classes=12):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(40, 64, 5, padding=2), nn.BatchNorm1d(64),
                                  nn.ReLU())
        self.rnn = nn.GRU(64, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, mfcc):
        f = self.conv(mfcc).transpose(1, 2)      # [B, T, 64]
        y, _ = self.rnn(f)
        return torch.log_softmax(self.fc(y[:, -1]), -1)


#: the char model's text (it learns to continue it)
CHAR_TEXT = ("Beautiful is better than ugly. Explicit is better than implicit. "
             "Simple is better than complex. Complex is better than complicated. "
             "Flat is better than nested. Sparse is better than dense. "
             "Readability counts. ")
CHAR_VOCAB = "".join(chr(c) for c in range(32, 127))


class CharLM(nn.Module):
    """Embedding + 2-layer LSTM + Linear; tokens [T, B], state in and out."""

    def __init__(self, vocab=len(CHAR_VOCAB), embed=32, hidden=128):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, num_layers=2)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, tokens, h0, c0):
        y, (h, c) = self.rnn(self.embed(tokens), (h0, c0))
        return self.fc(y), h, c


# the seq2seq toy task: reverse a string of digits
S2S_BOS, S2S_EOS, S2S_VOCAB, S2S_H = 10, 11, 12, 128


class Encoder(nn.Module):
    """tokens [B, S] -> outputs [B, S, H], final state [1, B, H] (GRU)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(S2S_VOCAB, 32)
        self.rnn = nn.GRU(32, S2S_H, batch_first=True)

    def forward(self, src):
        return self.rnn(self.embed(src))


class DecoderStep(nn.Module):
    """One decoder step with Luong (dot) attention: token [B], state [1, B, H],
    encoder outputs [B, S, H] -> logits [B, V], new state."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(S2S_VOCAB, 32)
        self.rnn = nn.GRU(32, S2S_H, batch_first=True)
        self.combine = nn.Linear(2 * S2S_H, S2S_H)
        self.out = nn.Linear(S2S_H, S2S_VOCAB)

    def forward(self, token, h, memory):
        y, h = self.rnn(self.embed(token)[:, None], h)           # [B, 1, H]
        score = torch.bmm(y, memory.transpose(1, 2))              # [B, 1, S]
        ctx = torch.bmm(torch.softmax(score, -1), memory)         # [B, 1, H]
        z = torch.tanh(self.combine(torch.cat([y, ctx], -1)))[:, 0]
        return self.out(z), h


class GreedyTranslator(nn.Module):
    """Encoder + the decoder loop (greedy, max_len steps) in one graph: scripted,
    so the export holds a Loop whose body runs the decoder's GRU."""

    bos: int

    def __init__(self, enc, dec):
        super().__init__()
        self.enc, self.dec = enc, dec
        self.bos = S2S_BOS

    def forward(self, src, max_len):
        memory, h = self.enc(src)
        tok = torch.full([src.shape[0]], self.bos, dtype=torch.long)
        out = torch.zeros([src.shape[0], 0], dtype=torch.long)
        for i in range(int(max_len)):
            logits, h = self.dec(tok, h, memory)
            tok = torch.argmax(logits, -1)
            out = torch.cat([out, tok[:, None]], 1)
        return out


def train_seq2seq(seconds):
    import time
    torch.manual_seed(0)
    enc, dec = Encoder(), DecoderStep()
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    t0, step = time.time(), 0
    while time.time() - t0 < seconds:
        L = int(torch.randint(3, 9, ()))
        src = torch.randint(0, 10, (64, L))
        tgt = torch.cat([src.flip(1), torch.full((64, 1), S2S_EOS)], 1)
        memory, h = enc(src)
        tok = torch.full((64,), S2S_BOS)
        loss = 0.0
        for i in range(tgt.shape[1]):
            logits, h = dec(tok, h, memory)
            loss = loss + loss_fn(logits, tgt[:, i])
            tok = tgt[:, i]
        opt.zero_grad()
        (loss / tgt.shape[1]).backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            print(f"  seq2seq step {step}: loss {float(loss) / tgt.shape[1]:.4f}")
    return enc.eval(), dec.eval()


def train_char(seconds):
    import time
    torch.manual_seed(0)
    m = CharLM()
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    ids = torch.tensor([CHAR_VOCAB.index(ch) for ch in CHAR_TEXT * 3])
    t0, step = time.time(), 0
    while time.time() - t0 < seconds:
        starts = torch.randint(0, len(CHAR_TEXT), (32,))
        seq = torch.stack([ids[s:s + 65] for s in starts], 1)          # [65, 32]
        z = torch.zeros(2, 32, 128)
        logits, _, _ = m(seq[:-1], z, z)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           seq[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"  char step {step}: loss {float(loss):.4f}")
    return m.eval()


def train_crnn(seconds, batch=16):
    import time
    import numpy as np
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = CRNN()
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    t0, step = time.time(), 0
    W = 128
    while time.time() - t0 < seconds:
        texts = ["".join(str(d) for d in rng.integers(0, 10, rng.integers(2, 7)))
                 for _ in range(batch)]
        x = torch.from_numpy(np.stack([render_digits(t, W, rng) for t in texts]))
        targets = torch.tensor([CRNN_CHARS.index(ch) + 1 for t in texts for ch in t])
        tl = torch.tensor([len(t) for t in texts])
        lp = m(x)
        loss = ctc(lp, targets, torch.full((batch,), lp.shape[0]), tl)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            print(f"  crnn step {step}: loss {float(loss):.4f}")
    return m.eval()


def _export(m, args, path, names, outs, dyn, opset=17, dynamo=False, shapes=None):
    if dynamo:
        torch.onnx.export(m, args, path, input_names=names, output_names=outs,
                          dynamic_shapes=shapes, dynamo=True, external_data=False)
    else:
        torch.onnx.export(m, args, path, input_names=names, output_names=outs,
                          dynamic_axes=dyn, opset_version=opset, dynamo=False)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path) / 1e6:.2f} MB)")


class Stacked(nn.Module):
    """A stacked nn.LSTM/nn.GRU as single-layer modules with the same weights.

    The dynamo exporter of torch 2.13 writes the export-time sequence length
    into the Reshape between stacked layers (onnxruntime then fails at any
    other length); layers exported one by one have no such Reshape."""

    def __init__(self, rnn):
        super().__init__()
        kind = type(rnn)
        self.lstm = kind is nn.LSTM
        D = 2 if rnn.bidirectional else 1
        self.D = D
        self.batch_first = rnn.batch_first
        self.layers = nn.ModuleList()
        for k in range(rnn.num_layers):
            layer = kind(rnn.input_size if k == 0 else rnn.hidden_size * D, rnn.hidden_size,
                         bidirectional=rnn.bidirectional, batch_first=True)
            for sfx in ("", "_reverse")[:D]:
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(layer, f"{w}_l0{sfx}").data.copy_(getattr(rnn, f"{w}_l{k}{sfx}"))
            self.layers.append(layer)

    def forward(self, x, state=None):
        # batch-first layers: with time first the exporter also writes the
        # export-time length into the Reshape that merges two directions
        if not self.batch_first:
            x = x.transpose(0, 1)
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            sl = slice(k * self.D, (k + 1) * self.D)
            if state is None:
                x, st = layer(x)
            elif self.lstm:
                x, st = layer(x, (state[0][sl], state[1][sl]))
            else:
                x, st = layer(x, state[sl])
            if self.lstm:
                hs.append(st[0])
                cs.append(st[1])
            else:
                hs.append(st)
        h = torch.cat(hs, 0)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return x, ((h, torch.cat(cs, 0)) if self.lstm else h)


def _for_dynamo(m):
    """``m`` with its stacked recurrent layers split (see Stacked)."""
    import copy
    m = copy.deepcopy(m)
    for name, mod in list(m.named_children()):
        if isinstance(mod, (nn.LSTM, nn.GRU)) and (mod.num_layers > 1 or mod.bidirectional):
            setattr(m, name, Stacked(mod))
    return m.eval()


def _both(name, m, args, names, outs, dyn, shapes):
    """TorchScript export (opset 17) and dynamo export; a failure is reported."""
    _export(m, args, os.path.join(TASKS, name + ".onnx"), names, outs, dyn)
    try:
        _export(_for_dynamo(m), args, os.path.join(TASKS, name + "_dynamo.onnx"), names,
                outs, dyn, dynamo=True, shapes=shapes)
    except Exception as e:
        print(f"skipped {name}_dynamo: {type(e).__name__}: {str(e)[:300]}")


def make_tasks(seconds, which=None):
    """Train the small task models briefly and export every task model
    (``which``: only these of crnn, speech, kws, char, s2s)."""
    Dim = torch.export.Dim
    os.makedirs(TASKS, exist_ok=True)
    batch = Dim("batch", min=1, max=64)
    want = (lambda k: which is None or k in which)  # noqa: E731
    if want("crnn"):
        _crnn(seconds, batch)
    if want("speech"):
        _speech(batch)
    if want("kws"):
        _kws(batch)
    if want("char"):
        _char(seconds, batch)
    if want("s2s"):
        _s2s(seconds, batch)


def _crnn(seconds, batch):
    Dim = torch.export.Dim
    crnn = train_crnn(seconds) if seconds else CRNN().eval()
    # (the dynamo exporter writes the export-time frame count into the Reshape
    # after each bidirectional LSTM/GRU here, whatever the layout: its export
    # runs at the export width only; a plain Dim fails to export at all)
    w4 = Dim("w4", min=2, max=1024)
    _both("crnn", crnn, (torch.randn(2, 1, 32, 96),), ["image"], ["log_probs"],
          {"image": {0: "batch", 3: "width"}, "log_probs": {0: "time", 1: "batch"}},
          ({0: batch, 3: 4 * w4},))


def _speech(batch):
    Dim = torch.export.Dim
    torch.manual_seed(1)
    speech = Speech().eval()
    for mod in speech.modules():        # non-trivial statistics for the BatchNorms
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    f2 = Dim("f2", min=2, max=4096)
    _both("speech", speech, (torch.randn(2, 1, 64, 100),), ["spectrogram"], ["log_probs"],
          {"spectrogram": {0: "batch", 3: "frames"}, "log_probs": {0: "time", 1: "batch"}},
          ({0: batch, 3: 2 * f2},))


def _kws(batch):
    Dim = torch.export.Dim
    torch.manual_seed(2)
    kws = KWS().eval()
    frames = Dim("frames", min=2, max=2048)
    _both("kws", kws, (torch.randn(2, 40, 49),), ["mfcc"], ["log_probs"],
          {"mfcc": {0: "batch", 2: "frames"}, "log_probs": {0: "batch"}},
          ({0: batch, 2: frames},))


def _char(seconds, batch):
    Dim = torch.export.Dim
    char = train_char(seconds) if seconds else CharLM().eval()
    T = Dim("T", min=1, max=1024)
    z = torch.zeros(2, 2, 128)
    _both("char_lm", char, (torch.zeros(3, 2, dtype=torch.long), z, z),
          ["token", "h0", "c0"], ["logits", "h1", "c1"],
          {"token": {0: "time", 1: "batch"}, "h0": {1: "batch"}, "c0": {1: "batch"},
           "logits": {0: "time", 1: "batch"}, "h1": {1: "batch"}, "c1": {1: "batch"}},
          ({0: T, 1: batch}, {1: batch}, {1: batch}))


def _s2s(seconds, batch):
    Dim = torch.export.Dim
    enc, dec = train_seq2seq(seconds) if seconds else (Encoder().eval(), DecoderStep().eval())
    S = Dim("S", min=1, max=256)
    _both("s2s_encoder", enc, (torch.randint(0, 10, (2, 5)),), ["src"], ["memory", "h"],
          {"src": {0: "batch", 1: "src_len"}, "memory": {0: "batch", 1: "src_len"},
           "h": {1: "batch"}}, ({0: batch, 1: S},))
    _both("s2s_decoder_step", dec,
          (torch.tensor([S2S_BOS, S2S_BOS]), torch.zeros(1, 2, S2S_H), torch.randn(2, 5, S2S_H)),
          ["token", "h", "memory"], ["logits", "h_out"],
          {"token": {0: "batch"}, "h": {1: "batch"}, "memory": {0: "batch", 1: "src_len"},
           "logits": {0: "batch"}, "h_out": {1: "batch"}},
          ({0: batch}, {1: batch}, {0: batch, 1: S}))
    # the whole greedy decoder as one scripted graph: the export holds a Loop
    # (the dynamo exporter traces, so it would unroll the loop: TorchScript only)
    loop = torch.jit.script(GreedyTranslator(enc, dec))
    _export(loop, (torch.randint(0, 10, (2, 5)), torch.tensor(6)),
            os.path.join(TASKS, "s2s_greedy_loop.onnx"), ["src", "max_len"], ["tokens"],
            {"src": {0: "batch", 1: "src_len"}, "tokens": {0: "batch", 1: "steps"}})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--tasks", action="store_true",
                    help="only the task models (tests/models/tasks/)")
    ap.add_argument("--train-seconds", type=float, default=60.0,
                    help="training time of each trained task model (0: untrained)")
    ap.add_argument("--task", nargs="*", choices=["crnn", "speech", "kws", "char", "s2s"],
                    help="with --tasks: only these")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    warnings.filterwarnings("ignore")
    if a.tasks:
        make_tasks(a.train_seconds, a.task)
        return
    for name, (make, opset, kind) in MODELS.items():
        if a.only and name not in a.only:
            continue
        try:
            export(name, make, opset, kind)
        except Exception as e:     # the dynamo exporter needs onnxscript
            print(f"skipped {name}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
