"""Conv per call: fastlstm's ConvRunner against onnxruntime on Silero VAD's shapes.

Each case is a one-node model (Conv with constant W and B, batch 1, NCW),
run by onnxruntime (1 intra-op thread) and by fastlstm three ways:
``runner`` is the node's ConvRunner called directly (what the specialised
executor pays per Conv), ``runner+relu`` the same with the Relu fused in,
``session`` a whole ``InferenceSession.run``.  Rounds of each are interleaved
(so a busy machine slows all of them alike); the medians of the rounds are
reported in microseconds per call, with onnxruntime's time over the runner's,
and the ratio of the fastest rounds (less disturbed by other processes).

    python benchmarks/conv_speed.py [--rounds 15] [--inner 400]
"""
import argparse
import statistics
import time

import numpy as np
from onnx import helper, numpy_helper

import fastlstm

# name, X shape, W shape, attributes
CASES = [
    ("stft 16k", (1, 1, 640), (258, 1, 256), {"strides": [128]}),
    ("enc1 16k", (1, 129, 4), (128, 129, 3), {"pads": [1, 1]}),
    ("enc2", (1, 128, 4), (64, 128, 3), {"pads": [1, 1], "strides": [2]}),
    ("enc3", (1, 64, 2), (64, 64, 3), {"pads": [1, 1], "strides": [2]}),
    ("enc4", (1, 64, 1), (128, 64, 3), {"pads": [1, 1]}),
    ("decoder", (1, 128, 1), (1, 128, 1), {}),
    ("stft 8k", (1, 1, 320), (130, 1, 128), {"strides": [64]}),
    ("enc1 8k", (1, 65, 4), (128, 65, 3), {"pads": [1, 1]}),
]


def _model(xs, ws, attrs, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(ws).astype(np.float32)
    B = rng.standard_normal(ws[0]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, list(xs))],
                          [helper.make_tensor_value_info("y", 1, None)],
                          [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _round(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner * 1e6


def measure(xs, ws, attrs, rounds, inner):
    model = _model(xs, ws, attrs)
    x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
    so = _ort(model)
    fs = fastlstm.InferenceSession(model.SerializeToString())
    runner = fs._plan.runners[0]
    fused = fastlstm.InferenceSession(model.SerializeToString())._plan.runners[0]
    fused.fuse_activation("Relu")
    feed = {"x": x}
    want = so.run(None, feed)[0]
    got = runner(feed)[0]
    err = float(np.abs(got - want).max())
    assert np.allclose(fused(feed)[0], np.maximum(want, 0), atol=1e-4, rtol=1e-4)
    fns = {"onnxruntime": lambda: so.run(None, feed), "runner": lambda: runner(feed),
           "runner+relu": lambda: fused(feed), "session": lambda: fs.run(None, feed)}
    samples = {k: [] for k in fns}
    for f in fns.values():      # warm up
        _round(f, max(1, inner // 10))
    for _ in range(rounds):
        for k, f in fns.items():
            samples[k].append(_round(f, inner))
    return ({k: statistics.median(v) for k, v in samples.items()},
            {k: min(v) for k, v in samples.items()}, err)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=400)
    args = ap.parse_args(argv)
    head = (f"{'case':9s} {'X':>12s} {'W':>14s} {'MACs':>6s} {'ort':>7s} {'runner':>7s} "
            f"{'+relu':>7s} {'session':>7s} {'ratio':>6s} {'ort min':>7s} {'run min':>7s} "
            f"{'ratio':>6s} {'max err':>7s}")
    print("us per call, medians (min: fastest round); ratio = onnxruntime / runner")
    print(head)
    print("-" * len(head))
    chain = {k: 0.0 for k in ("onnxruntime", "runner", "runner+relu", "session")}
    cmin = {"onnxruntime": 0.0, "runner": 0.0}
    for k, (name, xs, ws, attrs) in enumerate(CASES):
        m, lo, err = measure(xs, ws, attrs, args.rounds, args.inner)
        s = attrs.get("strides", [1])[0]
        p = sum(attrs.get("pads", [0, 0]))
        lout = (xs[2] + p - ws[2]) // s + 1
        macs = int(np.prod(ws)) * lout
        if k < 6:       # the six convs of one 16 kHz chunk
            for key in chain:
                chain[key] += m[key]
            for key in cmin:
                cmin[key] += lo[key]
        print(f"{name:9s} {str(list(xs)):>12s} {str(list(ws)):>14s} {macs:6d} "
              f"{m['onnxruntime']:7.2f} {m['runner']:7.2f} {m['runner+relu']:7.2f} "
              f"{m['session']:7.2f} {m['onnxruntime'] / m['runner']:5.1f}x "
              f"{lo['onnxruntime']:7.2f} {lo['runner']:7.2f} "
              f"{lo['onnxruntime'] / lo['runner']:5.1f}x {err:7.1e}")
    print(f"{'16k sum':9s} {'(the six convs of a chunk)':>34s} {chain['onnxruntime']:7.2f} "
          f"{chain['runner']:7.2f} {chain['runner+relu']:7.2f} {chain['session']:7.2f} "
          f"{chain['onnxruntime'] / chain['runner']:5.1f}x {cmin['onnxruntime']:7.2f} "
          f"{cmin['runner']:7.2f} {cmin['onnxruntime'] / cmin['runner']:5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
