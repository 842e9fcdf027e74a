"""Whole-graph cases of ``fastlstm bench``: models with many small nodes around
(or instead of) a recurrent layer, timed like the table's cases.

- ``silero``: Silero VAD (``silero_vad.onnx``) on one 16 kHz chunk (512 samples
  and 64 of context, state carried as an input, ``sr`` = 16000), as its
  wrapper streams it;
- ``silero-seq``: the sequence variant on 293 frames at once (time per call;
  the table also shows it per frame);
- ``add-chain``: 50 ``Add`` nodes on a [1, 128] tensor, each with a constant:
  the per-node cost of the executor;
- task models (``tests/models/tasks``, made by ``tools/make_torch_models.py
  --tasks``): ``crnn-100`` / ``crnn-400`` (the CRNN text reader on one image
  of width 100 / 400), ``speech-5s`` (the DeepSpeech-2-like model on 5 s of
  spectrogram frames), ``char-step`` (one step of the char LM, state in and
  out), ``s2s-step`` (one decoder step with attention).

The Silero and task models are the ones vendored for the tests (``tests/models/silero``
in a source checkout); without them those cases are left out, saying so.
"""
import os
import tempfile

import numpy as np

_SILERO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "tests", "models", "silero")

#: name -> (what, calls counted per run for the per-item column)
GRAPH_CASES = {
    "silero": ("Silero VAD, one 16 kHz chunk (512 + 64 samples)", 1),
    "silero-seq": ("Silero VAD sequence variant, 293 frames", 293),
    "add-chain": ("50 Add nodes on [1, 128]", 50),
    "crnn-100": ("CRNN text reader, a 1x32x100 image (conv blocks, 2-layer BiLSTM H=128)", 1),
    "crnn-400": ("CRNN text reader, a 1x32x400 image", 1),
    "speech-5s": ("DeepSpeech-2-like, 5 s of 64-bin frames (500; conv, 3 BiGRU H=128)", 1),
    "char-step": ("char LM, one generation step (Embedding, 2-layer LSTM H=128, state io)",
                  1),
    "s2s-step": ("seq2seq decoder step with dot attention over 10 encoder outputs (GRU H=128)",
                 1),
}

_TASKS_DIR = os.path.join(os.path.dirname(_SILERO_DIR), "tasks")

#: task cases: (model file in tests/models/tasks, feed maker)
_TASK_CASES = {
    "crnn-100": ("crnn.onnx", lambda r: {"image": r.standard_normal((1, 1, 32, 100))}),
    "crnn-400": ("crnn.onnx", lambda r: {"image": r.standard_normal((1, 1, 32, 400))}),
    "speech-5s": ("speech.onnx", lambda r: {"spectrogram": r.standard_normal((1, 1, 64, 500))}),
    "char-step": ("char_lm.onnx", lambda r: {"token": np.array([[40]], np.int64),
                                             "h0": r.standard_normal((2, 1, 128)) * 0.5,
                                             "c0": r.standard_normal((2, 1, 128)) * 0.5}),
    "s2s-step": ("s2s_decoder_step.onnx", lambda r: {"token": np.array([3], np.int64),
                                                     "h": r.standard_normal((1, 1, 128)) * .5,
                                                     "memory": r.standard_normal((1, 10, 128))}),
}


def add_chain_model(n=50, width=128):
    """Serialized ONNX model: x + c0 + c1 + ... (n Add nodes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, prev = [], [], "x"
    rng = np.random.default_rng(0)
    for k in range(n):
        inits.append(numpy_helper.from_array(
            rng.standard_normal((1, width)).astype(np.float32), f"c{k}"))
        nodes.append(helper.make_node("Add", [prev, f"c{k}"], [f"y{k}"]))
        prev = f"y{k}"
    g = helper.make_graph(nodes, "add_chain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                          [onnx.ValueInfoProto(name=prev)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def graph_cases(names, workdir=None):
    """{name: bench.model_case} for the graph cases in ``names`` that can run
    here, and {name: reason} for those that cannot."""
    from .bench import model_case
    workdir = workdir or tempfile.mkdtemp(prefix="fastlstm-bench-")
    rng = np.random.default_rng(0)
    cases, missing = {}, {}
    for name in names:
        feed_path = os.path.join(workdir, f"{name}.npz")
        if name == "add-chain":
            path = os.path.join(workdir, "add_chain.onnx")
            with open(path, "wb") as f:
                f.write(add_chain_model())
            np.savez(feed_path, x=rng.standard_normal((1, 128)).astype(np.float32))
        elif name in ("silero", "silero-seq"):
            fname = "silero_vad.onnx" if name == "silero" else "silero_vad_16k_sequence.onnx"
            path = os.path.join(_SILERO_DIR, fname)
            if not os.path.isfile(path):
                missing[name] = f"{path} not found (a source checkout has it)"
                continue
            audio = (rng.standard_normal(293 * 512 + 64) * 0.1).astype(np.float32)
            if name == "silero":
                np.savez(feed_path, input=audio[None, :576],
                         state=np.zeros((2, 1, 128), np.float32),
                         sr=np.array(16000, np.int64))
            else:
                frames = np.stack([audio[k * 512:k * 512 + 576] for k in range(293)])
                np.savez(feed_path, input=frames, h=np.zeros((1, 1, 128), np.float32),
                         c=np.zeros((1, 1, 128), np.float32))
        elif name in _TASK_CASES:
            fname, make = _TASK_CASES[name]
            path = os.path.join(_TASKS_DIR, fname)
            if not os.path.isfile(path):
                missing[name] = f"{path} not found (a source checkout has it)"
                continue
            feed = {k: v.astype(np.float32) if v.dtype.kind == "f" else v
                    for k, v in make(rng).items()}
            np.savez(feed_path, **feed)
        else:
            raise KeyError(name)
        cases[name] = model_case(path, feed_path)
    return cases, missing


def check_graph_case(case):
    """Max abs difference between fastlstm and onnxruntime on a graph case."""
    from .bench import _session
    with np.load(case["feed"], allow_pickle=False) as z:
        feed = {k: z[k] for k in z.files}
    a = _session("fastlstm", case["model"], 1)(feed)
    b = _session("onnxruntime", case["model"], 1)(feed)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def compare_graphs(names, threads, rounds, repeats, out):
    """Time the graph cases; print a table; return result dicts."""
    from .bench import measure
    cases, missing = graph_cases(names)
    for name, why in missing.items():
        print(f"{name}: left out: {why}", file=out)
    if not cases:
        return []
    errors = {name: check_graph_case(c) for name, c in cases.items()}
    results = []
    print(f"\n{'graph case':<12} {'thr':>3} {'fastlstm us':>12} {'onnxruntime us':>15} "
          f"{'ratio':>7} {'per item us (ours/ort)':>24} {'max err':>9}", file=out)
    for t in threads:
        med = measure(cases, t, rounds, repeats)
        for name in cases:
            ours, theirs = med["fastlstm"][name], med["onnxruntime"][name]
            per = GRAPH_CASES[name][1]
            r = {"case": name, "threads": t, "fastlstm_s": ours, "onnxruntime_s": theirs,
                 "ratio": theirs / ours, "items": per, "max_abs_err": errors[name]}
            results.append(r)
            print(f"{name:<12} {t:>3} {ours * 1e6:>12.1f} {theirs * 1e6:>15.1f} "
                  f"{theirs / ours:>6.2f}x {ours * 1e6 / per:>11.2f} /{theirs * 1e6 / per:>10.2f}"
                  f" {errors[name]:>9.1e}", file=out, flush=True)
    return results
