"""Regenerate the exported models in tests/models/ (needs torch; onnxscript for
the dynamo exporter).  The tests compare fastlstm with onnxruntime on them live,
so only the .onnx files are committed.

    pip install torch==2.13.0 onnxscript && python tools/make_torch_models.py

Each model is small (input 8, hidden 12) and has dynamic batch and time axes.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    warnings.filterwarnings("ignore")
    for name, (make, opset, kind) in MODELS.items():
        if a.only and name not in a.only:
            continue
        try:
            export(name, make, opset, kind)
        except Exception as e:     # the dynamo exporter needs onnxscript
            print(f"skipped {name}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
