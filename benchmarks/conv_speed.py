"""Conv per call: fastlstm's ConvRunner against onnxruntime on Silero VAD's shapes.

Each case is a one-node model (Conv with constant W and B, batch 1, NCW;
the STFT cases' W a Hann-windowed DFT basis as Silero's, which the runner
runs as FFTs, ``fastlstm.kernels.dft``; random elsewhere),
run by onnxruntime (1 intra-op thread) and by fastlstm three ways:
``runner`` is the node's ConvRunner called directly (what the specialised
executor pays per Conv), ``runner+relu`` the same with the Relu fused in,
``session`` a whole ``InferenceSession.run``, and the runner with its kernel
forced: ``panel`` (the panel or direct kernel), ``gemm`` (the packed panel
GEMM, ``fastlstm.kernels.conv.conv_gemm``) and ``items`` (a product per
output position, ``conv_items``, where it applies); ``kernel`` names the one
the runner chose.  Rounds of each are interleaved
(so a busy machine slows all of them alike); the medians of the rounds are
reported in microseconds per call, with onnxruntime's time over the runner's,
and the ratio of the fastest rounds (less disturbed by other processes).

    python benchmarks/conv_speed.py [--rounds 15] [--inner 400] [--batch N] [--seq]
    python benchmarks/conv_speed.py --pools [--rounds 15] [--inner 400]
    python benchmarks/conv_speed.py --wino [--rounds 15] [--inner 400] [--threads N]
    python benchmarks/conv_speed.py --fused [--rounds 15] [--inner 400]

``--batch N`` runs the cases with N items; ``--seq`` the convs of Silero's
sequence variant (293 frames at once: the STFT over 832 samples per frame, the
decoder over the frames as columns).  ``--inner`` is scaled down with the work.
``--rows`` times convs with few output channels or one input channel
(``kernels.conv.conv_rows`` forced on, forced off, and as the runner
chooses: conv_rows, or ``kernels.conv_taps`` for one input channel per
group).  ``--pools`` instead times the four MaxPools of the CRNN text reader
(tests/models/tasks/crnn.onnx at width 100) as one-node sessions, onnxruntime
against the function the specialised executor calls (the op's ``bind``).
``--wino`` times the CRNN's 3x3 convs at widths 100 and 400 with caches
flushed before every call: onnxruntime against ``kernels.winograd`` (4x4 and
2x2 output tiles) and the panel kernel, with each one's max error.
``--wino --threads N`` times them on sessions of N threads, split over the
threads by output tiles and not, against onnxruntime with N threads (calls
back to back, caches not flushed: see ``wino_threads``).
``--fused`` times the CRNN's conv stages (Conv, activation, MaxPool) as
whole sessions, caches flushed: onnxruntime against fastlstm's specialised
run with the pool fused into the conv's kernel and without.
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

# Silero VAD's sequence variant (tests/models/silero/silero_vad_16k_sequence.onnx)
SEQ_CASES = [
    ("stft seq", (293, 1, 832), (258, 1, 256), {"strides": [128]}),
    ("enc1 seq", (293, 129, 4), (128, 129, 3), {"pads": [1, 1]}),
    ("enc2 seq", (293, 128, 4), (64, 128, 3), {"pads": [1, 1], "strides": [2]}),
    ("enc3 seq", (293, 64, 2), (64, 64, 3), {"pads": [1, 1], "strides": [2]}),
    ("enc4 seq", (293, 64, 1), (128, 64, 3), {"pads": [1, 1]}),
    ("out seq", (1, 128, 293), (1, 128, 1), {}),
]


def _stft_basis(ws):
    """Weights of an STFT conv as Silero's: a Hann-windowed real DFT basis
    (cosines, then sines), which fastlstm runs as FFTs (kernels/dft.py)."""
    C, _, N = ws
    n = np.arange(N)
    ang = 2 * np.pi * np.outer(np.arange(C // 2), n) / N
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N)
    return np.concatenate([window * np.cos(ang), -window * np.sin(ang)])[:, None, :]


def _model(xs, ws, attrs, seed=0, stft=False):
    rng = np.random.default_rng(seed)
    W = (_stft_basis(ws) if stft else rng.standard_normal(ws)).astype(np.float32)
    B = rng.standard_normal(ws[0]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, list(xs))],
                          [helper.make_tensor_value_info("y", 1, None)],
                          [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if threads > 1:
        # (its idle workers would spin on the cores fastlstm's team uses next)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _kernel_name(runner):
    """The kernel a conv runner chose: a Numba entry's name (conv_panel ->
    panel), or the class of a callable one (TapsConv, STFTConv)."""
    k = runner._fast[3]
    f = getattr(k, "py_func", None)
    return f.__name__.replace("conv_", "") if f is not None else type(k).__name__


def _round(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner * 1e6


def _runner_with(model, x, flag, value):
    """The node's runner planned for X with ``fastlstm.ops.conv.<flag>`` =
    value (a kernel forced on or off: GEMM, ROWS, WINO)."""
    from fastlstm.ops import conv
    old = getattr(conv, flag)
    setattr(conv, flag, value)
    try:
        r = fastlstm.InferenceSession(model.SerializeToString())._plan.runners[0]
        r.run1(x)
    finally:
        setattr(conv, flag, old)
    return r


def _forced(model, x, policy):
    """The node's runner with ``fastlstm.ops.conv.GEMM`` = policy while it plans
    (False: the panel or direct kernel, Winograd and ``conv_items`` off too)."""
    if policy:
        return _runner_with(model, x, "GEMM", policy)
    from fastlstm.ops import conv
    old = conv.WINO, conv.ITEMS
    conv.WINO, conv.ITEMS = 0, False
    try:
        return _runner_with(model, x, "GEMM", policy)
    finally:
        conv.WINO, conv.ITEMS = old


def measure(xs, ws, attrs, rounds, inner, stft=False):
    model = _model(xs, ws, attrs, stft=stft)
    x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
    so = _ort(model)
    fs = fastlstm.InferenceSession(model.SerializeToString())
    runner = fs._plan.runners[0]
    fused = fastlstm.InferenceSession(model.SerializeToString())._plan.runners[0]
    fused.fuse_activation("Relu")
    panel, gemm = _forced(model, x, False), _forced(model, x, True)
    items = _runner_with(model, x, "ITEMS", True)
    feed = {"x": x}
    want = so.run(None, feed)[0]
    got = runner(feed)[0]
    err = float(np.abs(got - want).max())
    tol = 1e-5 * max(1.0, np.sqrt(np.prod(ws[1:])))
    assert np.allclose(fused(feed)[0], np.maximum(want, 0), atol=tol, rtol=1e-4)
    for r in (panel, gemm, items):
        assert np.allclose(r.run1(x), want, atol=tol, rtol=1e-4)
    fns = {"onnxruntime": lambda: so.run(None, feed), "runner": lambda: runner(feed),
           "runner+relu": lambda: fused(feed), "session": lambda: fs.run(None, feed),
           "panel": lambda: panel.run1(x), "gemm": lambda: gemm.run1(x),
           "items": lambda: items.run1(x)}
    samples = {k: [] for k in fns}
    for f in fns.values():      # warm up
        _round(f, max(1, inner // 10))
    for _ in range(rounds):
        for k, f in fns.items():
            samples[k].append(_round(f, inner))
    return ({k: statistics.median(v) for k, v in samples.items()},
            {k: min(v) for k, v in samples.items()}, err,
            _kernel_name(runner))


# CRNN's MaxPools at width 100: X shape, kernel, strides
POOL_CASES = [((1, 32, 32, 100), [2, 2], [2, 2]), ((1, 64, 16, 50), [2, 2], [2, 2]),
              ((1, 96, 8, 25), [2, 1], [2, 1]), ((1, 128, 4, 25), [4, 1], [4, 1])]


def pools(rounds, inner):
    from fastlstm.ops import conv
    print("us per call, medians (min: fastest round); ratio = onnxruntime / fastlstm")
    head = (f"{'X':>18s} {'kernel':>7s} {'stride':>7s} {'ort':>7s} {'ours':>7s} {'ratio':>6s} "
            f"{'ort min':>7s} {'min':>7s} {'ratio':>6s}")
    print(head)
    print("-" * len(head))
    tot = {"ort": 0.0, "ours": 0.0, "ort min": 0.0, "min": 0.0}
    for xs, k, st in POOL_CASES:
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=k, strides=st)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, list(xs))],
                              [helper.make_tensor_value_info("y", 1, None)])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
        so = _ort(model)
        sess = fastlstm.InferenceSession(model.SerializeToString())
        run = conv._bind_pool(sess._graph.nodes[0], {}, {"x": x})
        assert np.array_equal(run(x), so.run(None, {"x": x})[0])
        fns = {"ort": lambda: so.run(None, {"x": x}), "ours": lambda: run(x)}
        samples = {n: [] for n in fns}
        for f in fns.values():
            _round(f, max(1, inner // 10))
        for _ in range(rounds):
            for n, f in fns.items():
                samples[n].append(_round(f, inner))
        m = {n: statistics.median(v) for n, v in samples.items()}
        lo = {n: min(v) for n, v in samples.items()}
        tot["ort"] += m["ort"]
        tot["ours"] += m["ours"]
        tot["ort min"] += lo["ort"]
        tot["min"] += lo["ours"]
        print(f"{str(list(xs)):>18s} {str(k):>7s} {str(st):>7s} {m['ort']:7.1f} "
              f"{m['ours']:7.1f} {m['ort'] / m['ours']:5.2f}x {lo['ort']:7.1f} "
              f"{lo['ours']:7.1f} {lo['ort'] / lo['ours']:5.2f}x")
    print(f"{'the four':>18s} {'':>7s} {'':>7s} {tot['ort']:7.1f} {tot['ours']:7.1f} "
          f"{tot['ort'] / tot['ours']:5.2f}x {tot['ort min']:7.1f} {tot['min']:7.1f} "
          f"{tot['ort min'] / tot['min']:5.2f}x")
    return 0


# convs with few output channels or one input channel (``--rows``): the
# speech model's two (tests/models/tasks/speech.onnx, 5 s), CRNN's first two
# (tests/models/tasks/crnn.onnx, width 100), a depthwise one
ROWS_CASES = [
    ("speech1", (1, 1, 64, 500), (8, 1, 11, 5), {"pads": [5, 2, 5, 2], "strides": [2, 2]}),
    ("speech2", (1, 8, 32, 250), (8, 8, 11, 5), {"pads": [5, 2, 5, 2], "strides": [2, 1]}),
    ("crnn1", (1, 1, 32, 100), (32, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("crnn2", (1, 32, 16, 50), (64, 32, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("dw", (1, 32, 16, 50), (32, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 32}),
    ("1d few", (1, 16, 400), (4, 16, 5), {"pads": [2, 2]}),
    ("head", (1, 128, 293), (1, 128, 1), {}),
    ("s3 few", (1, 4, 20, 90), (6, 4, 3, 5), {"strides": [1, 3], "pads": [1, 2, 1, 2]}),
]


def rows(rounds, inner):
    print("us per call, medians (min: fastest round); ratio = onnxruntime / runner "
          "(as it chooses)")
    head = (f"{'case':8s} {'X':>16s} {'W':>14s} {'MMACs':>6s} {'ort':>7s} {'rows':>7s} "
            f"{'other':>7s} {'runner':>7s} {'ratio':>6s} {'ort min':>7s} {'rows min':>8s} "
            f"{'oth min':>7s} {'kernel':>7s} {'GMAC/s':>6s}")
    print(head)
    print("-" * len(head))
    for name, xs, ws, attrs in ROWS_CASES:
        model = _model(xs, ws, attrs)
        x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
        so = _ort(model)
        want = so.run(None, {"x": x})[0]
        on, off = _runner_with(model, x, "ROWS", True), _runner_with(model, x, "ROWS", False)
        runner = fastlstm.InferenceSession(model.SerializeToString())._plan.runners[0]
        runner.run1(x)
        tol = 1e-5 * max(1.0, np.sqrt(np.prod(ws[1:])))
        for r in (on, off, runner):
            assert np.allclose(r.run1(x), want, atol=tol, rtol=1e-4)
        macs = int(np.prod(ws[1:])) * want.size
        n = max(2, min(inner, int(inner * 3e6 / macs)))
        fns = {"ort": lambda: so.run(None, {"x": x}), "rows": lambda: on.run1(x),
               "other": lambda: off.run1(x), "runner": lambda: runner.run1(x)}
        samples = {k: [] for k in fns}
        for f in fns.values():
            _round(f, max(1, n // 10))
        for _ in range(rounds):
            for k, f in fns.items():
                samples[k].append(_round(f, n))
        m = {k: statistics.median(v) for k, v in samples.items()}
        lo = {k: min(v) for k, v in samples.items()}
        kern = _kernel_name(runner)
        print(f"{name:8s} {str(list(xs)):>16s} {str(list(ws)):>14s} {macs / 1e6:6.2f} "
              f"{m['ort']:7.1f} {m['rows']:7.1f} {m['other']:7.1f} {m['runner']:7.1f} "
              f"{m['ort'] / m['runner']:5.2f}x {lo['ort']:7.1f} {lo['rows']:8.1f} "
              f"{lo['other']:7.1f} {kern:>7s} {macs / lo['runner'] / 1e3:6.1f}")
    return 0


# the CRNN text reader's 3x3 convs (tests/models/tasks/crnn.onnx) at widths
# 100 and 400 (``--wino``)
WINO_CASES = [
    ("crnn2", (1, 32, 16, 50), (64, 32, 3, 3)),
    ("crnn3", (1, 64, 8, 25), (96, 64, 3, 3)),
    ("crnn4", (1, 96, 4, 25), (128, 96, 3, 3)),
    ("crnn2 w400", (1, 32, 16, 200), (64, 32, 3, 3)),
    ("crnn3 w400", (1, 64, 8, 100), (96, 64, 3, 3)),
    ("crnn4 w400", (1, 96, 4, 100), (128, 96, 3, 3)),
]


def _flusher():
    """A call that sums a 12 MB array, so that what a conv reads next comes
    from L3 or memory, as in a graph where other nodes run in between."""
    junk = np.ones(3 << 20, np.float32)

    def flush():
        junk.sum()
    return flush


def wino(rounds, inner):
    """3x3 stride-1 convs: onnxruntime against ``kernels.winograd`` with 4x4
    and 2x2 output tiles and the panel kernel.  Before every call a 12 MB
    array is summed, so that weights, X and Y come from L3 or memory as in
    a graph, where other nodes run in between (the sum's own time, measured
    alone, is subtracted)."""
    flush = _flusher()
    print("us per call, fastest rounds, caches flushed before each call; ratio = "
          "onnxruntime / F(4x4); max abs error against onnxruntime")
    head = (f"{'case':11s} {'MMACs':>6s} {'ort':>7s} {'F4x4':>7s} {'F2x2':>7s} {'panel':>7s} "
            f"{'ratio':>6s} {'err F4':>7s} {'err F2':>7s} {'err pan':>7s} {'|Y|max':>6s} "
            f"{'chosen':>8s}")
    print(head)
    print("-" * len(head))
    tot = {"ort": 0.0, "F4x4": 0.0}
    for name, xs, ws in WINO_CASES:
        model = _model(xs, ws, {"pads": [1, 1, 1, 1]})
        x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
        so = _ort(model)
        want = so.run(None, {"x": x})[0]
        runners = {k: _runner_with(model, x, "WINO", t)
                   for k, t in (("F4x4", 4), ("F2x2", 2), ("panel", 0))}
        err = {k: float(np.abs(r.run1(x) - want).max()) for k, r in runners.items()}
        sess = fastlstm.InferenceSession(model.SerializeToString())
        sess.run(None, {"x": x})
        chosen = _kernel_name(sess._plan.runners[0])
        macs = int(np.prod(ws[1:])) * want.size
        n = max(2, min(inner, int(inner * 1e6 / macs)))
        fns = {"flush": flush, "ort": lambda: (flush(), so.run(None, {"x": x}))}
        for k, r in runners.items():
            fns[k] = (lambda r: lambda: (flush(), r.run1(x)))(r)
        samples = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                samples[k].append(_round(f, n))
        lo = {k: min(v) - min(samples["flush"]) for k, v in samples.items() if k != "flush"}
        for k in tot:
            tot[k] += lo[k]
        print(f"{name:11s} {macs / 1e6:6.2f} {lo['ort']:7.1f} {lo['F4x4']:7.1f} "
              f"{lo['F2x2']:7.1f} {lo['panel']:7.1f} {lo['ort'] / lo['F4x4']:5.2f}x "
              f"{err['F4x4']:7.1e} {err['F2x2']:7.1e} {err['panel']:7.1e} "
              f"{float(np.abs(want).max()):6.1f} {chosen:>8s}")
    print(f"{'the six':11s} {'':6s} {tot['ort']:7.1f} {tot['F4x4']:7.1f} {'':7s} {'':7s} "
          f"{tot['ort'] / tot['F4x4']:5.2f}x")
    return 0


# the CRNN's conv stages at widths 100 and 400 (tests/models/tasks/crnn.onnx):
# name, X shape, Cout, activation, pool window
FUSED_CASES = [
    ("crnn1", (1, 1, 32, 100), 32, "Relu", (2, 2)),
    ("crnn2", (1, 32, 16, 50), 64, "SiLU", (2, 2)),
    ("crnn3", (1, 64, 8, 25), 96, "Relu", (2, 1)),
    ("crnn4", (1, 96, 4, 25), 128, "Relu", (4, 1)),
    ("crnn1 w400", (1, 1, 32, 400), 32, "Relu", (2, 2)),
    ("crnn2 w400", (1, 32, 16, 200), 64, "SiLU", (2, 2)),
    ("crnn3 w400", (1, 64, 8, 100), 96, "Relu", (2, 1)),
    ("crnn4 w400", (1, 96, 4, 100), 128, "Relu", (4, 1)),
]


def _stage_model(xs, cout, act, pool):
    """Conv 3x3 (pads 1) -> act (SiLU as Sigmoid and Mul) -> MaxPool."""
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((cout, xs[1], 3, 3)) * 0.2).astype(np.float32)
    B = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1])]
    if act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]),
                  helper.make_node("Mul", ["c", "s"], ["a"])]
    else:
        nodes.append(helper.make_node(act, ["c"], ["a"]))
    nodes.append(helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=list(pool),
                                  strides=list(pool)))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, list(xs))],
                          [helper.make_tensor_value_info("y", 1, None)],
                          [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def fused(rounds, inner):
    """The CRNN's conv stages (Conv, activation, MaxPool) as whole sessions,
    caches flushed before every call as in ``wino``: onnxruntime against
    fastlstm's specialised run with the pool fused into the conv's kernel
    (``fastlstm.codegen.FUSE_POOL``, the default) and without."""
    from fastlstm import codegen
    flush = _flusher()
    print("us per call, medians, caches flushed before each call; ratio = unfused / fused; "
          "onnxruntime / fused")
    head = (f"{'case':11s} {'ort':>7s} {'unfused':>8s} {'fused':>7s} {'ratio':>6s} "
            f"{'vs ort':>6s} {'max err':>8s} {'pool fused':>10s}")
    print(head)
    print("-" * len(head))
    tot = {"ort": 0.0, "unfused": 0.0, "fused": 0.0}
    for name, xs, cout, act, pool in FUSED_CASES:
        model = _stage_model(xs, cout, act, pool)
        x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
        so = _ort(model)
        want = so.run(None, {"x": x})[0]
        sess, err = {}, 0.0
        for on in (False, True):
            codegen.FUSE_POOL = on
            try:
                s = fastlstm.InferenceSession(model.SerializeToString())
                for _ in range(3):          # general, then specialised
                    got = s.run(None, {"x": x})[0]
            finally:
                codegen.FUSE_POOL = True
            err = max(err, float(np.abs(got - want).max()))
            sess[on] = s
        fn = next(iter(sess[True]._plan._specialiser._built.values()))
        pooled = "_bind_pool" not in " ".join(
            getattr(v, "__qualname__", "") for v in fn.__globals__.values())
        fns = {"flush": flush, "ort": lambda: (flush(), so.run(None, {"x": x})),
               "unfused": lambda: (flush(), sess[False].run(None, {"x": x})),
               "fused": lambda: (flush(), sess[True].run(None, {"x": x}))}
        samples = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                samples[k].append(_round(f, inner))
        m = {k: statistics.median(v) - statistics.median(samples["flush"])
             for k, v in samples.items() if k != "flush"}
        for k in tot:
            tot[k] += m[k]
        print(f"{name:11s} {m['ort']:7.1f} {m['unfused']:8.1f} {m['fused']:7.1f} "
              f"{m['unfused'] / m['fused']:5.2f}x {m['ort'] / m['fused']:5.2f}x {err:8.1e} "
              f"{'yes' if pooled else 'no':>10s}")
    print(f"{'the eight':11s} {tot['ort']:7.1f} {tot['unfused']:8.1f} {tot['fused']:7.1f} "
          f"{tot['unfused'] / tot['fused']:5.2f}x {tot['ort'] / tot['fused']:5.2f}x")
    return 0


def wino_threads(rounds, inner, threads):
    """``--wino --threads N``: the CRNN's 3x3 convs on a session of N
    threads, each on the Winograd kernel its shape gets, split over the
    threads by output tiles (``ops.conv._TeamWino``) and not, against
    onnxruntime with N threads (its workers not spinning between calls: in
    this one process they would take the cores of fastlstm's team);
    ``chosen`` says what the session does.
    Calls back to back, caches not flushed: ``wino``'s flush (a 12 MB sum
    on the calling thread, a millisecond or more) outlasts the team's spin
    between jobs (20000 pauses, about 0.5 ms here), so every split call
    would first wake a sleeping worker, which on the development VM took
    50 us to milliseconds (in a graph the nodes run back to back)."""
    from fastlstm.ops import conv
    print(f"us per call at {threads} threads, medians of rounds, calls back to back")
    head = (f"{'case':11s} {'tiles':>5s} {'ort':>7s} {'one':>7s} {'split':>7s} "
            f"{'ort/split':>9s} {'one/split':>9s} {'chosen':>8s}")
    print(head)
    print("-" * len(head))
    opts = fastlstm.SessionOptions()
    opts.intra_op_num_threads = threads
    for name, xs, ws in WINO_CASES:
        model = _model(xs, ws, {"pads": [1, 1, 1, 1]})
        x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
        so = _ort(model, threads)
        runners = {}
        for key, flag in (("one", False), ("split", True), ("chosen", None)):
            old = conv.WINO_THREADS
            conv.WINO_THREADS = flag
            try:
                r = fastlstm.InferenceSession(model.SerializeToString(), opts)._plan.runners[0]
                r.run1(x)
            finally:
                conv.WINO_THREADS = old
            runners[key] = r
        chosen = "split" if type(runners["chosen"]._fast[3]).__name__ == "_TeamWino" else "one"
        tile = 4 if "wino4" in runners["one"]._fast[3].__name__ else 2
        tiles = -(-xs[2] // tile) * -(-xs[3] // tile)
        macs = int(np.prod(ws[1:])) * int(np.prod(so.run(None, {"x": x})[0].shape))
        n = max(2, min(inner, int(inner * 1e6 / macs)))
        fns = {"ort": lambda: so.run(None, {"x": x})}
        for k in ("one", "split"):
            fns[k] = (lambda r: lambda: r.run1(x))(runners[k])
        samples = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                f()
                samples[k].append(_round(f, n))
        med = {k: statistics.median(v) for k, v in samples.items()}
        print(f"{name:11s} {tiles:5d} {med['ort']:7.1f} {med['one']:7.1f} {med['split']:7.1f} "
              f"{med['ort'] / med['split']:8.2f}x {med['one'] / med['split']:8.2f}x "
              f"{chosen:>8s}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=400)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", action="store_true")
    ap.add_argument("--pools", action="store_true")
    ap.add_argument("--rows", action="store_true")
    ap.add_argument("--wino", action="store_true")
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.wino and args.threads > 1:
        return wino_threads(args.rounds, min(args.inner, 20), args.threads)
    if args.fused:
        return fused(args.rounds, min(args.inner, 20))
    if args.wino:
        return wino(args.rounds, min(args.inner, 20))
    if args.rows:
        return rows(args.rounds, min(args.inner, 50))
    if args.pools:
        return pools(args.rounds, min(args.inner, 100))
    cases = SEQ_CASES if args.seq else [(n, (args.batch,) + tuple(xs[1:]), ws, a)
                                        for n, xs, ws, a in CASES]
    head = (f"{'case':9s} {'X':>14s} {'W':>14s} {'MACs':>9s} {'ort':>7s} {'runner':>7s} "
            f"{'+relu':>7s} {'session':>7s} {'ratio':>6s} {'ort min':>7s} {'run min':>7s} "
            f"{'ratio':>6s} {'max err':>7s} {'panel':>7s} {'gemm':>7s} {'items':>7s} "
            f"{'kernel':>6s}")
    print("us per call, medians (min: fastest round); ratio = onnxruntime / runner")
    print(head)
    print("-" * len(head))
    chain = {k: 0.0 for k in ("onnxruntime", "runner", "runner+relu", "session")}
    cmin = {"onnxruntime": 0.0, "runner": 0.0}
    for k, (name, xs, ws, attrs) in enumerate(cases):
        s = attrs.get("strides", [1])[0]
        p = sum(attrs.get("pads", [0, 0]))
        lout = (xs[2] + p - ws[2]) // s + 1
        macs = int(np.prod(ws)) * lout * xs[0]
        inner = max(2, min(args.inner, int(args.inner * 3e5 / macs)))
        m, lo, err, kern = measure(xs, ws, attrs, args.rounds, inner,
                                   stft=name.startswith("stft"))
        if k < 6:       # the six convs of one 16 kHz chunk (or of the sequence)
            for key in chain:
                chain[key] += m[key]
            for key in cmin:
                cmin[key] += lo[key]
        print(f"{name:9s} {str(list(xs)):>14s} {str(list(ws)):>14s} {macs:9d} "
              f"{m['onnxruntime']:7.2f} {m['runner']:7.2f} {m['runner+relu']:7.2f} "
              f"{m['session']:7.2f} {m['onnxruntime'] / m['runner']:5.1f}x "
              f"{lo['onnxruntime']:7.2f} {lo['runner']:7.2f} "
              f"{lo['onnxruntime'] / lo['runner']:5.1f}x {err:7.1e} {m['panel']:7.2f} "
              f"{m['gemm']:7.2f} {m['items']:7.2f} {kern:>6s}")
    print(f"{'16k sum':9s} {'(the six convs of a chunk)':>39s} {chain['onnxruntime']:7.2f} "
          f"{chain['runner']:7.2f} {chain['runner+relu']:7.2f} {chain['session']:7.2f} "
          f"{chain['onnxruntime'] / chain['runner']:5.1f}x {cmin['onnxruntime']:7.2f} "
          f"{cmin['runner']:7.2f} {cmin['onnxruntime'] / cmin['runner']:5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
