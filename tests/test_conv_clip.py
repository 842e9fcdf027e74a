"""Clip fused into the Conv before it (the specialised executor, through
codegen._fuse_conv_activation and ConvRunner.fused("Clip", bounds)), against
onnxruntime: bounds as attributes (opset 6) and as constant inputs (11 on),
one bound absent, every kernel (panel, direct, GEMM, ConvTranspose), and the
cases that must not fuse (a bound fed at run time, a second reader)."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import fastlstm
from fastlstm.ops import conv as conv_ops
from helpers import run_ort

R = np.random.default_rng(5)


def _rand(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _model(op, xs, ws, attrs, opset, lo, hi, fed=(), extra_reader=False):
    """X -> op(W, B) -> Clip(lo, hi) -> y; lo/hi None for an absent bound; names
    in ``fed`` are graph inputs instead of initializers."""
    cout = ws[1] * attrs.get("group", 1) if op == "ConvTranspose" else ws[0]
    inits = [numpy_helper.from_array(_rand(*ws), "W"), numpy_helper.from_array(_rand(cout), "B")]
    nodes = [helper.make_node(op, ["x", "W", "B"], ["c"], **attrs)]
    inputs = [helper.make_tensor_value_info("x", 1, list(xs))]
    if opset < 11:
        kw = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        nodes.append(helper.make_node("Clip", ["c"], ["y"], **kw))
    else:
        names = []
        for name, v in (("lo", lo), ("hi", hi)):
            if v is None:
                names.append("")
                continue
            names.append(name)
            if name in fed:
                inputs.append(helper.make_tensor_value_info(name, 1, []))
            else:
                inits.append(numpy_helper.from_array(np.array(v, np.float32), name))
        while names and not names[-1]:
            names.pop()
        nodes.append(helper.make_node("Clip", ["c"] + names, ["y"]))
    outputs = [onnx.ValueInfoProto(name="y")]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["c"], ["z"]))
        outputs.append(onnx.ValueInfoProto(name="z"))
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _fused_source(sess):
    built = sess._plan._specialiser._built
    assert built, "no specialised run was built"
    return next(iter(built.values())).source


def _check(model, feed, fuse, atol=2e-5):
    exp = run_ort(model, feed)
    sess = fastlstm.InferenceSession(model.SerializeToString())
    for _ in range(3):      # the third run is the specialised one
        got = sess.run(None, feed)
        for g, e in zip(got, exp):
            np.testing.assert_allclose(g, e, atol=atol, rtol=1e-4)
    src = _fused_source(sess)
    # fused: the conv's call is the run's one step (no Clip, glue or fused
    # loop); the generated code calls a conv kernel in a block of its own
    # (allocation, try: kernel, except: the runner)
    lines = src.splitlines()[1:]
    blocks = sum(ln.strip() == "try:" for ln in lines)
    other = [ln for ln in lines if not ln.startswith(" " * 8) and "feed[" not in ln
             and "return" not in ln and ln.strip() not in ("try:", "except TypeError:")
             and not (blocks and "np.empty" in ln and "np.float32)" in ln
                      and lines[lines.index(ln) + 1].strip() == "try:")]
    assert (blocks + len(other) == 1) == fuse, src
    return got


# (op, X, W, attrs): the speech model's first conv (panel kernel), a
# one-channel head (direct), Silero's encoder at batch 1 (GEMM), a transpose
CONVS = [
    ("Conv", (1, 1, 41, 60), (8, 1, 11, 5), {"pads": [5, 2, 5, 2], "strides": [2, 2]}),
    ("Conv", (1, 16, 30), (1, 16, 3), {"pads": [1, 1]}),
    ("Conv", (1, 64, 2), (64, 64, 3), {"pads": [1, 1], "strides": [2]}),
    ("ConvTranspose", (1, 6, 9), (6, 4, 3), {"strides": [2]}),
]


@pytest.mark.parametrize("op,xs,ws,attrs", CONVS, ids=[f"{c[0]}-{c[2]}" for c in CONVS])
@pytest.mark.parametrize("opset,lo,hi", [(7, 0.0, 20.0), (13, 0.0, 20.0), (13, -0.5, 0.25),
                                         (13, None, 0.5), (13, -0.25, None), (9, None, 0.5)])
def test_clip_fused(op, xs, ws, attrs, opset, lo, hi):
    model = _model(op, xs, ws, attrs, opset, lo, hi)
    x = _rand(*xs) * 4
    got = _check(model, {"x": x}, fuse=True)[0]
    if lo is not None:
        assert got.min() >= lo and (got == np.float32(lo)).any()
    if hi is not None:
        assert got.max() <= hi and (got == np.float32(hi)).any()


def test_clip_not_fused_with_a_fed_bound_or_a_second_reader():
    xs, ws, attrs = (1, 1, 21, 30), (8, 1, 11, 5), {"pads": [5, 2, 5, 2], "strides": [2, 2]}
    x = _rand(*xs)
    fed = _model("Conv", xs, ws, attrs, 13, 0.0, 0.5, fed=("hi",))
    _check(fed, {"x": x, "hi": np.array(0.5, np.float32)}, fuse=False)
    two = _model("Conv", xs, ws, attrs, 13, 0.0, 0.5, extra_reader=True)
    _check(two, {"x": x}, fuse=False)


def test_runner_clip_api():
    model = _model("Conv", (1, 2, 9), (4, 2, 3), {}, 13, -0.1, 0.1)
    sess = fastlstm.InferenceSession(model.SerializeToString())
    runner = sess._plan.runners[0]
    assert isinstance(runner, conv_ops.ConvRunner)
    clip_node = sess._graph.nodes[1]
    assert runner.clip_bounds_from(clip_node) == (np.float32(-0.1), np.float32(0.1))
    assert runner.fused("Clip") is None                 # bounds are required
    assert runner.fused("Clip", "ab") is None
    x = _rand(1, 2, 9)
    plain = runner.run1(x)
    c = runner.fused("Clip", (None, 0.1))
    assert c.fused_activation == "Clip" and runner.fused_activation is None
    assert c.clip_bounds == (np.float32(np.finfo(np.float32).min), np.float32(0.1))
    np.testing.assert_array_equal(c.run1(x), np.where(plain > np.float32(0.1),
                                                      np.float32(0.1), plain))
    np.testing.assert_array_equal(runner.run1(x), plain)    # left as it was
    assert runner.fuse_activation("Clip", (np.nan, 0.1))     # a NaN bound: no-op side
    np.testing.assert_array_equal(runner.run1(x), np.minimum(plain, np.float32(0.1)))


@pytest.mark.parametrize("xs,ws,attrs", [
    ((3, 16, 9), (20, 16, 3), {"pads": [1, 1]}),
    ((1, 1, 700), (30, 1, 64), {"strides": [32]}),      # one channel read in place
])
def test_clip_fused_in_the_gemm_kernel(xs, ws, attrs, monkeypatch):
    monkeypatch.setattr(conv_ops, "GEMM", True)
    model = _model("Conv", xs, ws, attrs, 13, -0.3, 0.6)
    x = _rand(*xs)
    exp = run_ort(model, {"x": x})[0]
    sess = fastlstm.InferenceSession(model.SerializeToString())
    runner = sess._plan.runners[0]
    f = runner.fused("Clip", runner.clip_bounds_from(sess._graph.nodes[1]))
    got = f.run1(x)
    assert f._fast[3].py_func.__name__ == "conv_gemm"
    np.testing.assert_allclose(got, exp, atol=1e-4, rtol=1e-4)
