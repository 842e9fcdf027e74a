"""The task models of tests/models/tasks (made by ``tools/make_torch_models.py
--tasks`` with PyTorch 2.13: TorchScript exporter at opset 17, and the dynamo
exporter) against onnxruntime on several input sizes; and the examples of
examples/README_tasks.md: read digits from an image with the CRNN and CTC,
generate text with the char model, reverse digit strings with the
encoder-decoder (step graphs, beam search, and the scripted Loop)."""
import os
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import decode

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = os.path.join(HERE, "models", "tasks")
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from digit_font import render_digits  # noqa: E402

ort = pytest.importorskip("onnxruntime")

CHARS = "".join(chr(c) for c in range(32, 127))      # CRNN classes 1.., char model tokens
BOS, EOS = 10, 11                                    # seq2seq specials (digits are 0-9)


def _rng(*seed):
    return np.random.default_rng(list(seed))


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# model -> list of feeds (functions of a seeded rng): several sizes each; the
# dynamo exports of the CRNN, the speech model, the KWS and the char model hold
# the export-time frame count (the exporter of torch 2.13 writes it into the
# Reshape after each LSTM/GRU, or into the input shape), so they run at that
# length only, in onnxruntime as in fastlstm (batch sizes vary)
CASES = {
    "crnn": [lambda r, B=B, W=W: {"image": f32(r, B, 1, 32, W)}
             for B, W in ((1, 100), (2, 64), (1, 400))],
    "crnn_dynamo": [lambda r, B=B: {"image": f32(r, B, 1, 32, 96)} for B in (1, 2, 3)],
    "speech": [lambda r, B=B, F=F: {"spectrogram": f32(r, B, 1, 64, F)}
               for B, F in ((1, 100), (2, 64), (1, 250))],
    "speech_dynamo": [lambda r, B=B: {"spectrogram": f32(r, B, 1, 64, 100)} for B in (1, 2)],
    "kws": [lambda r, B=B, F=F: {"mfcc": f32(r, B, 40, F)} for B, F in ((1, 49), (2, 98),
                                                                          (3, 20))],
    "kws_dynamo": [lambda r, B=B: {"mfcc": f32(r, B, 40, 49)} for B in (1, 2, 4)],
    "char_lm": [lambda r, T=T, B=B: {"token": r.integers(0, 95, (T, B)),
                                     "h0": f32(r, 2, B, 128), "c0": f32(r, 2, B, 128)}
                for T, B in ((1, 1), (5, 2), (20, 3))],
    "s2s_encoder": [lambda r, B=B, S=S: {"src": r.integers(0, 10, (B, S))}
                    for B, S in ((1, 3), (2, 8), (4, 5))],
    "s2s_decoder_step": [lambda r, B=B, S=S: {"token": r.integers(0, 12, B),
                                              "h": f32(r, 1, B, 128),
                                              "memory": f32(r, B, S, 128)}
                         for B, S in ((1, 3), (2, 8), (4, 5))],
    "s2s_greedy_loop": [lambda r, B=B, S=S, M=M: {"src": r.integers(0, 10, (B, S)),
                                                  "max_len": np.array(M, np.int64)}
                        for B, S, M in ((1, 4, 5), (2, 7, 8), (3, 3, 1))],
}
for _name in ("s2s_encoder", "s2s_decoder_step"):
    CASES[_name + "_dynamo"] = CASES[_name]
# (its LSTM's output Reshape holds the export-time length, 3 steps)
CASES["char_lm_dynamo"] = [lambda r, B=B: {"token": r.integers(0, 95, (3, B)),
                                           "h0": f32(r, 2, B, 128), "c0": f32(r, 2, B, 128)}
                           for B in (1, 2, 5)]

#: largest difference from onnxruntime per model, printed at the end of the run
MAX_ERR = {}


def _path(name):
    p = os.path.join(TASKS, name + ".onnx")
    if not os.path.exists(p):
        pytest.skip(f"{name}.onnx not made (tools/make_torch_models.py --tasks)")
    return p


@pytest.mark.parametrize("name", sorted(CASES))
def test_task_model_matches_onnxruntime(name):
    path = _path(name)
    sess = fastlstm.InferenceSession(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    worst = 0.0
    for k, make in enumerate(CASES[name]):
        feed = make(_rng(k, len(name)))
        want = ref.run(None, feed)
        for _ in range(2):      # general path, then the specialised run
            got = sess.run(None, feed)
            for g, w, o in zip(got, want, ref.get_outputs()):
                assert g.shape == w.shape and g.dtype == w.dtype, (o.name, g.shape, w.shape)
                if g.dtype.kind == "f":
                    err = float(np.max(np.abs(g - w))) if g.size else 0.0
                    worst = max(worst, err)
                    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-4, err_msg=o.name)
                else:
                    assert np.array_equal(g, w), o.name
    MAX_ERR[name] = worst


def test_report_max_errors(capsys):
    if MAX_ERR:
        with capsys.disabled():
            print("\nmax |fastlstm - onnxruntime| per task model:")
            for k in sorted(MAX_ERR):
                print(f"  {k:28s} {MAX_ERR[k]:.2e}")


# ----------------------------------------------------------- README examples

def read_text(sess, image):
    """The README's reader: CRNN log-probs [T, B, classes] -> CTC greedy -> text."""
    log_probs, = sess.run(None, {"image": image})
    return ["".join(CHARS[c - 1] for c in labels) for labels in decode.ctc_greedy(log_probs)]


def test_read_text_from_an_image():
    """The committed reader (trained for 20 minutes on rendered digit strings)
    reads them; fastlstm reads exactly what onnxruntime's outputs decode to."""
    path = _path("crnn")
    sess = fastlstm.InferenceSession(path)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2026)
    truth = ["20261126", "314159", "42", "8675309", "1234567890"]
    images = [render_digits(t, 224, rng)[None] for t in truth]
    got = [read_text(sess, img)[0] for img in images]
    assert got == [read_text(ref, img)[0] for img in images]
    assert got == truth
    # a batch of images of one width, read at once: the same texts
    batch = np.concatenate(images)
    assert read_text(sess, batch) == truth
    # random strings at other widths
    rng = np.random.default_rng(5)
    texts = ["".join(map(str, rng.integers(0, 10, rng.integers(2, 8)))) for _ in range(12)]
    read = [read_text(sess, render_digits(t, w, rng)[None])[0]
            for t, w in zip(texts, [160, 200, 240] * 4)]
    assert sum(r == t for r, t in zip(read, texts)) >= 11, (read, texts)
    # beam search over either engine's log-probs: the same labellings
    lp, = sess.run(None, {"image": batch})
    lp_ref, = ref.run(None, {"image": batch})
    beams = decode.ctc_beam_search(lp, beam_width=8, n_best=2)
    beams_ref = decode.ctc_beam_search(lp_ref, beam_width=8, n_best=2)
    assert ["".join(CHARS[c - 1] for c in b[0][0]) for b in beams] == truth
    for b, r in zip(beams, beams_ref):
        assert [x.tolist() for x, _ in b] == [x.tolist() for x, _ in r]
        assert np.allclose([s for _, s in b], [s for _, s in r], atol=1e-3)


def char_step(sess):
    return decode.session_step(sess, "token", "logits", {"h0": "h1", "c0": "c1"},
                               batch_axes=1, time_major=True)


def generate(sess, prompt, n, **sampling):
    """The README's generator: prime the state with the prompt, then greedy
    (or sampled) continuation, one step per character."""
    z = np.zeros((2, 1, 128), np.float32)
    tokens = np.array([[CHARS.index(ch)] for ch in prompt], np.int64)      # [T, 1]
    logits, h, c = sess.run(None, {"token": tokens[:-1], "h0": z, "c0": z}) if \
        len(prompt) > 1 else (None, z, z)
    step = char_step(sess)
    state = {"h0": h, "c0": c}
    if sampling:
        out, n_out = decode.sample(step, state, tokens[-1], n, **sampling)
    else:
        out, n_out = decode.greedy(step, state, tokens[-1], n)
    return prompt + "".join(CHARS[t] for t in out[0, :n_out[0]])


def test_generate_text():
    path = _path("char_lm")
    sess = fastlstm.InferenceSession(path)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    text = generate(sess, "Simple is", 40)
    assert text == generate(ref, "Simple is", 40)
    # (trained for seconds: it has learned the text's pattern, not all of it)
    assert text.startswith("Simple is better than compl"), text
    # sampling: reproducible, and the same through either engine
    s1 = generate(sess, "Flat", 30, temperature=0.5, top_k=5, rng=3)
    assert s1 == generate(sess, "Flat", 30, temperature=0.5, top_k=5, rng=3)
    assert s1 == generate(ref, "Flat", 30, temperature=0.5, top_k=5, rng=3)
    # through a stream: the stream carries h/c, one character per call (the
    # export slices h0/c0 per layer, so they are still inputs; the stream's
    # state is used instead of what is fed there)
    stream = sess.stream()
    z = {"h0": np.zeros((2, 1, 128), np.float32), "c0": np.zeros((2, 1, 128), np.float32)}
    for ch in "Simple i":
        stream.run(["logits"], dict(z, token=np.array([[CHARS.index(ch)]])))
    out, n = decode.greedy(decode.stream_step(stream, "token", "logits", feed=z), None,
                           CHARS.index("s"), 40)
    assert "Simple is" + "".join(CHARS[t] for t in out[0, :n[0]]) == text


def translate(enc, dec, digits, beam_width=None):
    """The README's translator: encode, then decode step by step (greedy or beam)."""
    src = np.array([[int(d) for d in digits]], np.int64)
    memory, h = enc.run(None, {"src": src})
    step = decode.session_step(dec, "token", "logits", {"h": "h_out"},
                               batch_axes={"h": 1, "memory": 0})
    state = {"h": h, "memory": memory}
    if beam_width is None:
        out, n = decode.greedy(step, state, BOS, len(digits) + 2, end_token=EOS)
        return "".join(str(t) for t in out[0, :n[0]])
    state = step.select(state, np.zeros(beam_width, np.int64))
    best = decode.beam_search(step, state, BOS, len(digits) + 2, EOS, beam_width=beam_width)
    return "".join(str(t) for t in best[0][0])


def test_translate_reverses_digit_strings():
    """The committed model (trained for 10 minutes on random strings of 3-8
    digits) reverses most of them: the strings below and 15 of 20 random ones
    (the rest are off by a digit); the same tokens as onnxruntime everywhere;
    and the scripted Loop graph decodes as the step graphs do."""
    enc = fastlstm.InferenceSession(_path("s2s_encoder"))
    dec = fastlstm.InferenceSession(_path("s2s_decoder_step"))
    renc = ort.InferenceSession(_path("s2s_encoder"), providers=["CPUExecutionProvider"])
    rdec = ort.InferenceSession(_path("s2s_decoder_step"), providers=["CPUExecutionProvider"])
    loop = fastlstm.InferenceSession(_path("s2s_greedy_loop"))
    rloop = ort.InferenceSession(_path("s2s_greedy_loop"), providers=["CPUExecutionProvider"])
    assert translate(enc, dec, "123") == "321"
    known = ["123", "90210", "8675309", "5550", "246", "97531", "1029384", "592860", "953",
             "038", "7054", "19065829", "4711", "31415926", "77788899"]
    rng = np.random.default_rng(0)
    randoms = ["".join(map(str, rng.integers(0, 10, rng.integers(3, 9)))) for _ in range(20)]
    right = 0
    for digits in known + randoms:
        got = translate(enc, dec, digits)
        assert got == translate(renc, rdec, digits)
        if digits in known:
            assert got == digits[::-1], (digits, got)
            assert translate(enc, dec, digits, beam_width=3) == got
        else:
            right += got == digits[::-1]
            assert translate(enc, dec, digits, 3) == translate(renc, rdec, digits, 3)
        # the scripted decoder: one graph, a Loop over the decoder's GRU step
        src = np.array([[int(d) for d in digits]])
        max_len = np.array(len(digits) + 1, np.int64)
        toks, = loop.run(None, {"src": src, "max_len": max_len})
        assert np.array_equal(toks, rloop.run(None, {"src": src, "max_len": max_len})[0])
        if got == digits[::-1]:
            assert "".join(str(t) for t in toks[0]) == got + str(EOS)
    assert right >= 15, right


def test_readme_section_runs_as_written():
    """examples/README_tasks.md: its snippets, in order, from the checkout."""
    import re
    src = open(os.path.join(HERE, "..", "examples", "README_tasks.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", src, re.S)
    assert len(blocks) == 3
    ns = {"image": render_digits("123", 96, np.random.default_rng(0))[None]}
    cwd = os.getcwd()
    os.chdir(os.path.join(HERE, ".."))
    try:
        for b in blocks:
            exec(compile(b, "README_tasks.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    assert ns["out"][0, :ns["n"][0]].tolist() == [3, 2, 1]
    assert len(ns["beams"]) == 1 and ns["beams"][0][0].tolist() == [3, 2, 1]
    assert len(ns["nbest"]) == 1 and len(ns["nbest"][0]) == 3
