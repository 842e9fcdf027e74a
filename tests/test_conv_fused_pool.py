"""A Conv's activation and a MaxPool after it computed by the Conv's kernel
(``ConvRunner.fused("SiLU")``, ``ConvRunner.fused_pool``; the specialised
run fuses them, ``fastlstm.codegen._fuse_conv_activation``), checked against
onnxruntime: Winograd's stores pooling every window of a tile, tiles cut
by Y's edge, each activation (SiLU as PyTorch exports it: Sigmoid and Mul),
the epilogue that pools after the other kernels, inputs with a NaN (the
direct sum, then the epilogue), and graphs where the fusion must not happen."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import fastlstm
from fastlstm.ir import Node
from fastlstm.kernels import conv as K
from fastlstm.ops import conv as conv_op
from helpers import run_ort

R = np.random.default_rng(23)


def _model(cin, cout, act, pool, extra_reader=False, pool_out_too=False):
    """Conv 3x3 (pads 1) -> act -> MaxPool(pool, strides=pool) -> y."""
    w = (R.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32)
    b = R.standard_normal(cout).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    a = "c"
    if act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]),
                  helper.make_node("Mul", ["c", "s"], ["a"])]
        a = "a"
    elif act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["a"]))
        inits += [numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
                  numpy_helper.from_array(np.array(0.8, np.float32), "hi")]
        a = "a"
    elif act:
        nodes.append(helper.make_node(act, ["c"], ["a"]))
        a = "a"
    outs = ["y"]
    if pool:
        nodes.append(helper.make_node("MaxPool", [a], ["y"], kernel_shape=list(pool),
                                      strides=list(pool)))
    else:
        nodes.append(helper.make_node("Identity", [a], ["y"]))
    if extra_reader:            # the pooled tensor is read by another node too
        nodes.append(helper.make_node("Neg", [a], ["z"]))
        outs.append("z")
    if pool_out_too:
        outs.append(a)
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                   [None, cin, None, None])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _specialised(sess):
    fns = list(sess._plan._specialiser._built.values())
    assert len(fns) == 1
    return fns[0]


def _pool_fused(fn):
    """Whether the specialised run ``fn`` pools inside a Winograd kernel
    (a geo with the pool set, no pool op of its own)."""
    g = fn.__globals__
    pools = [v for v in g.values()
             if getattr(v, "__qualname__", "").startswith("_bind_pool")]
    geos = [v for v in g.values() if isinstance(v, np.ndarray) and v.dtype == np.int64
            and v.shape == (K.GEO_SIZE,) and v[K.G_POOLH] > 0]
    return not pools and len(geos) == 1


def _run(m, x, times=3):
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(times):          # general, then specialised
        got = sess.run(None, {"x": x})
    return sess, got


CASES = [
    # CRNN's convs with their pools (tests/models/tasks/crnn.onnx, width 100)
    (32, 64, "SiLU", (2, 2), (1, 32, 16, 50)),
    (64, 96, "Relu", (2, 1), (1, 64, 8, 25)),
    (96, 128, "Relu", (4, 1), (1, 96, 16, 25)),     # F(4x4): 4-row windows in a tile
    (96, 128, "Relu", (4, 1), (1, 96, 4, 25)),      # the same at width 100: 7 tiles
    # outputs that end mid-tile and mid-window, a batch, each activation
    (16, 24, None, (2, 2), (2, 16, 9, 13)),
    (16, 17, "Sigmoid", (1, 2), (1, 16, 10, 11)),
    (20, 16, "Clip", (2, 2), (3, 20, 7, 10)),
    (16, 16, "SiLU", (4, 4), (1, 16, 17, 18)),
    (16, 16, "Relu", (1, 1), (1, 16, 8, 9)),
]


@pytest.mark.parametrize("cin,cout,act,pool,shape", CASES)
def test_fused_pool_matches_onnxruntime(cin, cout, act, pool, shape):
    m = _model(cin, cout, act, pool)
    x = R.standard_normal(shape).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    sess, got = _run(m, x)
    assert got[0].shape == want.shape
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=2e-5 * np.sqrt(9 * cin))
    assert _pool_fused(_specialised(sess))


@pytest.mark.parametrize("act", ["SiLU", "Relu"])
def test_fused_activation_without_pool(act):
    """SiLU fused alone (its Mul the graph's output, through an Identity)."""
    m = _model(16, 24, act, None)
    x = R.standard_normal((1, 16, 12, 12)).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    sess, got = _run(m, x)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=2e-4)
    fn = _specialised(sess)
    assert "Sigmoid" not in fn.source and not _pool_fused(fn)
    geos = [v for v in fn.__globals__.values() if isinstance(v, np.ndarray)
            and v.dtype == np.int64 and v.shape == (K.GEO_SIZE,)]
    assert [int(g[K.G_ACT]) for g in geos] == [K.ACT_SILU if act == "SiLU" else K.ACT_RELU]


@pytest.mark.parametrize("extra_reader,pool_out_too", [(True, False), (False, True)])
def test_no_fusion_when_the_activation_is_read_elsewhere(extra_reader, pool_out_too):
    m = _model(16, 16, "Relu", (2, 2), extra_reader=extra_reader, pool_out_too=pool_out_too)
    x = R.standard_normal((1, 16, 12, 12)).astype(np.float32)
    want = run_ort(m, {"x": x})
    sess, got = _run(m, x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-4)
    assert not _pool_fused(_specialised(sess))


@pytest.mark.parametrize("act,pool,shape", [("Relu", (2, 2), (1, 1, 32, 100)),
                                             ("SiLU", (2, 1), (2, 1, 9, 21)),
                                             ("Clip", (3, 2), (1, 1, 10, 13))])
def test_pool_fused_into_the_tap_kernel(act, pool, shape):
    """A one-channel conv (CRNN's first) runs on ``kernels.conv_taps``,
    which pools its output rows from a buffer in L1."""
    m = _model(1, 8, act, pool)
    x = R.standard_normal(shape).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    sess, got = _run(m, x)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
    assert _pool_fused(_specialised(sess))


@pytest.mark.parametrize("cin,cout,pool,shape", [
    (16, 8, (2, 1), (1, 16, 2, 9)),         # the panel kernel
    (32, 32, (4, 1), (1, 32, 40, 3)),       # F(2x2) (too narrow for 4x4): tiles split windows
])
def test_pool_not_fused_after_a_kernel_that_cannot_pool(cin, cout, pool, shape):
    """A kernel that would need the epilogue after it (slower than the
    pool's own kernel): the pool stays a node of its own."""
    m = _model(cin, cout, "Relu", pool)
    x = R.standard_normal(shape).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    sess, got = _run(m, x)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=2e-5 * np.sqrt(9 * cin))
    assert not _pool_fused(_specialised(sess))


@pytest.mark.parametrize("cin,act,pool,shape", [
    (1, "Relu", (2, 2), (1, 1, 9, 20)),         # conv_taps, pooling itself
    (16, "SiLU", (2, 1), (2, 16, 2, 9)),         # panel kernel (too few tiles)
    (16, "Sigmoid", (3, 3), (1, 16, 10, 10)),    # Winograd's tiles split 3x3 windows
])
def test_runner_pools_after_any_kernel(cin, act, pool, shape):
    """``fused_pool`` without a shape gives a runner that pools whatever the
    kernel (run1, the specialised run's fallback)."""
    m = _model(cin, 8, act, pool)
    x = R.standard_normal(shape).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    sess = fastlstm.InferenceSession(m.SerializeToString())
    conv_node = sess._graph.nodes[0]
    pool_node = sess._graph.nodes[-1]
    r = sess._plan.runners[0].fused(act).fused_pool(pool_node)
    assert r is not None and conv_node.op_type == "Conv"
    got = r.run1(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[2, 2], strides=[1, 1]),
                                   dict(kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
                                   dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
                                   dict(kernel_shape=[2, 2], strides=[2, 2],
                                        dilations=[2, 2])])
def test_pools_whose_windows_do_not_tile_are_not_fused(attrs):
    sess = fastlstm.InferenceSession(_model(16, 16, "Relu", (2, 2)).SerializeToString())
    pool = Node("MaxPool", "p", ("a",), ("y",), attrs, since_version=12)
    assert sess._plan.runners[0].fused_pool(pool) is None
    ok = Node("MaxPool", "p", ("a",), ("y",), dict(kernel_shape=[2, 2], strides=[2, 2]),
              since_version=12)
    assert sess._plan.runners[0].fused_pool(ok) is not None
    with_indices = Node("MaxPool", "p", ("a",), ("y", "i"),
                        dict(kernel_shape=[2, 2], strides=[2, 2]), since_version=12)
    assert sess._plan.runners[0].fused_pool(with_indices) is None


@pytest.mark.parametrize("tile", [2, 4])
def test_nan_input_takes_the_direct_sum_then_pools(tile):
    """A NaN in X: the Winograd kernel hands X to the panel kernel, then the
    epilogue applies the activation and the pool.  The pooled outputs whose
    window holds a NaN are NaN (MaxPool's rule in ``kernels.pool``: NaN
    propagates; onnxruntime and ONNX's reference keep a NaN only when it is
    the window's first tap), the others as ONNX's reference computes them."""
    m = _model(16, 16, "SiLU", (2, 2))
    x = R.standard_normal((1, 16, 8, 8)).astype(np.float32)
    x[0, 3, 2, 5] = np.nan
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    # (where the activation is NaN depends only on where X is: other weights)
    act = ReferenceEvaluator(_model(16, 16, "SiLU", (2, 2), pool_out_too=True)).run(
        None, {"x": x})[1]
    nan = np.isnan(act).reshape(1, 16, 4, 2, 4, 2).any(axis=(3, 5))
    old = conv_op.WINO
    conv_op.WINO = tile
    try:
        sess, got = _run(m, x)
    finally:
        conv_op.WINO = old
    np.testing.assert_array_equal(np.isnan(got[0]), nan)
    assert nan.any() and (~nan).any()
    np.testing.assert_allclose(got[0][~nan], want[~nan], rtol=1e-5, atol=1e-4)
    assert _pool_fused(_specialised(sess))


@pytest.mark.parametrize("act,pool,shape", [("Relu", (2, 2), (2, 1, 17, 70)),
                                             ("Clip", (3, 2), (1, 1, 14, 54)),
                                             (None, (1, 2), (1, 1, 5, 37))])
def test_tap_kernel_vector_pool_with_nans(act, pool, shape):
    """The tap kernel's vector paths: its conv rows two at a time (and a
    last one alone), the windows of two columns 8 at a time (the rest by
    the loop), an odd output height; NaNs in X: the pooled outputs whose
    window holds one are NaN (MaxPool's rule, as in the test above), the
    others as ONNX's reference computes them."""
    m = _model(1, 8, act, pool)
    x = R.standard_normal(shape).astype(np.float32)
    size = x.size
    for i in (5, 71, size // 2, size - 40):
        x.reshape(-1)[i] = np.nan
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    a = ReferenceEvaluator(_model(1, 8, act, pool, pool_out_too=True)).run(None, {"x": x})[1]
    n, c, oh, ow = want.shape
    nan = np.isnan(a[:, :, :oh * pool[0], :ow * pool[1]]).reshape(
        n, c, oh, pool[0], ow, pool[1]).any(axis=(3, 5))
    sess, got = _run(m, x)
    assert _pool_fused(_specialised(sess))
    np.testing.assert_array_equal(np.isnan(got[0]), nan)
    assert nan.any() and (~nan).any()
    np.testing.assert_allclose(got[0][~nan], want[~nan], rtol=1e-5, atol=1e-5)
