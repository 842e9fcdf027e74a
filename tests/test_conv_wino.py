"""3x3 stride-1 convs by Winograd's F(2x2, 3x3) and F(4x4, 3x3), and 1-D
convs of kernel 3 by F(4, 3) (fastlstm.kernels.winograd),
checked against onnxruntime: odd and even output sizes, every padding, a
batch, fused activations, channel counts that are not multiples of a vector,
and inputs the transforms must not see (NaN, infinities, huge values)."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

import fastlstm
from fastlstm.ops import conv as conv_op
from helpers import conv_model, run_ort

R = np.random.default_rng(11)


def _model(cin, cout, act=None, **attrs):
    return conv_model(R, cin, cout, (3, 3), 1, act, scale=0.2, **attrs)


def _kernel_names(sess):
    return {getattr(r._fast[3], "py_func", r._fast[3]).__name__
            for r in sess._plan.runners if getattr(r, "_fast", (None,))[0]}


CASES = [
    # the CRNN text reader's convs (tests/models/tasks/crnn.onnx, width 100)
    (32, 64, None, dict(pads=[1, 1, 1, 1]), (1, 32, 16, 50)),
    (64, 96, "Relu", dict(pads=[1, 1, 1, 1]), (1, 64, 8, 25)),
    (96, 128, "Relu", dict(pads=[1, 1, 1, 1]), (1, 96, 4, 25)),
    # odd output sizes, no padding, asymmetric and wide padding, a batch
    (16, 16, None, {}, (2, 16, 9, 12)),
    (20, 40, "Sigmoid", dict(pads=[0, 2, 1, 0]), (3, 20, 7, 11)),
    (17, 24, "Clip", dict(pads=[3, 1, 2, 2]), (1, 17, 5, 6)),
    (16, 33, None, dict(auto_pad="SAME_UPPER"), (2, 16, 10, 13)),
]


@pytest.fixture(params=[2, 4])
def tile(request):
    old = conv_op.WINO
    conv_op.WINO = request.param
    yield request.param
    conv_op.WINO = old


@pytest.mark.parametrize("cin,cout,act,attrs,shape", CASES)
def test_wino_matches_onnxruntime(cin, cout, act, attrs, shape, tile):
    m = _model(cin, cout, act, **attrs)
    x = R.standard_normal(shape).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(3):              # general, then specialised (activation fused)
        got = sess.run(None, {"x": x})[0]
        # the transforms round differently from a direct sum: a few ulps of
        # the sum's terms (|w x| ~ 0.2 here, 9*cin of them), F(4x4)'s about
        # 10x more than F(2x2)'s
        tol = (2e-6 if tile == 2 else 2e-5) * np.sqrt(9 * cin)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol)
    assert ("conv_wino" if tile == 2 else "conv_wino4") in _kernel_names(sess)


def test_wino_chooses_the_tile_by_shape():
    m = _model(32, 32, None, pads=[1, 1, 1, 1])
    for shape, name in (((1, 32, 16, 50), "conv_wino4"), ((1, 32, 2, 50), "conv_wino"),
                        ((1, 32, 4, 25), "conv_wino4"), ((1, 32, 4, 20), "conv_wino"),
                        ((1, 32, 1, 50), "conv_panel"),
                        ((1, 32, 6, 6), "conv_panel")):
        sess = fastlstm.InferenceSession(m.SerializeToString())
        x = R.standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, run_ort(m, {"x": x})[0], rtol=1e-5, atol=2e-4)
        assert _kernel_names(sess) == {name}


def test_wino_forced_off_and_on_agree_with_onnxruntime():
    m = _model(16, 16, "Relu", pads=[1, 1, 1, 1])
    x = R.standard_normal((1, 16, 6, 7)).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    for force, name in ((0, "conv_panel"), (2, "conv_wino"), (4, "conv_wino4")):
        old = conv_op.WINO
        conv_op.WINO = force
        try:
            sess = fastlstm.InferenceSession(m.SerializeToString())
            got = sess.run(None, {"x": x})[0]
        finally:
            conv_op.WINO = old
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 if force == 4 else 1e-5)
        assert _kernel_names(sess) == {name}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38])
def test_wino_leaves_non_finite_and_huge_inputs_to_the_direct_sum(bad, tile):
    """A NaN must make NaN only the outputs whose window holds it (and inf
    only inf), as a direct sum does: the transforms would spread it over a
    2x2 tile (and make inf - inf = NaN)."""
    m = _model(16, 16, None, pads=[1, 1, 1, 1])
    x = R.standard_normal((1, 16, 8, 8)).astype(np.float32)
    x[0, 3, 0, 0] = bad     # a corner: only 4 outputs per channel read it
    sess = _check_non_finite(m, x)
    assert ("conv_wino" if tile == 2 else "conv_wino4") in _kernel_names(sess)


def _check_non_finite(m, x):
    """Three runs of ``m`` on ``x`` (general, then specialised) against
    onnxruntime: NaN and inf where it has them, the rest close; the session."""
    want = run_ort(m, {"x": x})[0]
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(3):
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-4)
    return sess


def test_wino_not_packed_for_non_finite_weights():
    m = _model(16, 16, None, pads=[1, 1, 1, 1])
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[2, 1, 0, 0] = np.nan
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    x = R.standard_normal((1, 16, 6, 6)).astype(np.float32)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    got = sess.run(None, {"x": x})[0]
    assert "conv_wino" not in _kernel_names(sess)
    # channel 2 is NaN wherever the NaN tap reads inside X (at the border the
    # panel kernel multiplies it by the zero padding, as onnx.reference does,
    # where onnxruntime skips the tap); the other channels are untouched
    want = run_ort(m, {"x": x})[0]
    assert np.all(np.isnan(got[:, 2][np.isnan(want[:, 2])]))
    others = [c for c in range(16) if c != 2]
    np.testing.assert_allclose(got[:, others], want[:, others], rtol=1e-5, atol=1e-5)


# 1-D, kernel 3, stride 1 (conv_wino1): Silero's first encoder conv in a
# batch and alone, pads of 0-2 on either side, several tiles per item,
# channel counts that are not multiples of a vector, activations
CASES_1D = [
    (129, 128, "Relu", dict(pads=[1, 1]), (64, 129, 4)),
    (129, 128, "Relu", dict(pads=[1, 1]), (1, 129, 4)),
    (24, 20, None, dict(pads=[2, 0]), (3, 24, 12)),
    (17, 33, "Clip", dict(pads=[0, 2]), (5, 17, 16)),
    (16, 16, "Sigmoid", {}, (2, 16, 18)),
    (40, 24, None, dict(pads=[1, 1]), (7, 40, 12)),
]


def _model1(cin, cout, act=None, **attrs):
    return conv_model(R, cin, cout, (3,), 1, act, scale=0.2, **attrs)


@pytest.mark.parametrize("cin,cout,act,attrs,shape", CASES_1D)
def test_wino1_matches_onnxruntime(cin, cout, act, attrs, shape):
    m = _model1(cin, cout, act, **attrs)
    x = R.standard_normal(shape).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(3):              # general, then specialised (activation fused)
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5 * np.sqrt(3 * cin))
    assert "conv_wino1" in _kernel_names(sess)


def test_wino1_result_of_an_item_does_not_depend_on_the_batch():
    """Each item's outputs are the same bits alone and in any batch (a
    StreamPool relies on it)."""
    m = _model1(129, 128, "Relu", pads=[1, 1])
    x = R.standard_normal((50, 129, 4)).astype(np.float32)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    whole = sess.run(None, {"x": x})[0]
    for i in (0, 17, 49):
        np.testing.assert_array_equal(sess.run(None, {"x": x[i:i + 1]})[0][0], whole[i])
    np.testing.assert_array_equal(sess.run(None, {"x": x[10:23]})[0], whole[10:23])


def test_wino1_chosen_by_shape():
    """Output positions not a multiple of 4, or few channels: other kernels."""
    for cin, cout, shape, pads, name in ((32, 32, (2, 32, 9), [1, 1], None),
                                         (8, 32, (4, 8, 8), [1, 1], None),
                                         (32, 32, (4, 32, 8), [1, 1], "conv_wino1")):
        m = _model1(cin, cout, None, pads=pads)
        x = R.standard_normal(shape).astype(np.float32)
        sess = fastlstm.InferenceSession(m.SerializeToString())
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], run_ort(m, {"x": x})[0],
                                   rtol=1e-5, atol=2e-4)
        names = _kernel_names(sess)
        assert ("conv_wino1" in names) == (name is not None), names


@pytest.mark.parametrize("bad", [np.nan, np.inf, 3e38])
def test_wino1_leaves_non_finite_and_huge_inputs_to_the_direct_sum(bad):
    m = _model1(16, 16, None, pads=[1, 1])
    x = R.standard_normal((3, 16, 8)).astype(np.float32)
    x[1, 5, 0] = bad        # an end: only 2 outputs per channel read it
    assert "conv_wino1" in _kernel_names(_check_non_finite(m, x))


def _session(m, threads):
    opts = fastlstm.SessionOptions()
    opts.intra_op_num_threads = threads
    return fastlstm.InferenceSession(m.SerializeToString(), opts)


@pytest.fixture
def split_always():
    old = conv_op.WINO_THREADS
    conv_op.WINO_THREADS = True
    yield
    conv_op.WINO_THREADS = old


# (cin, cout, act, attrs, X shape, MaxPool or None): tiles split unevenly
# between the threads, a batch, a fused activation and pool
SPLIT_CASES = [
    (32, 64, "Relu", dict(pads=[1, 1, 1, 1]), (1, 32, 16, 50), None),
    (20, 40, "Sigmoid", dict(pads=[0, 2, 1, 0]), (3, 20, 7, 11), None),
    (16, 24, "Relu", dict(pads=[1, 1, 1, 1]), (2, 16, 12, 10), (2, 2)),
]


@pytest.mark.parametrize("cin,cout,act,attrs,shape,pool", SPLIT_CASES)
def test_wino_split_over_threads_gives_the_same_bits(cin, cout, act, attrs, shape, pool, tile,
                                                     split_always):
    """Two threads, each a range of every item's tiles (``_TeamWino``): the
    same bits as one thread, and onnxruntime's result."""
    m = _model(cin, cout, act, **attrs)
    if pool:
        y = m.graph.output[0].name
        m.graph.node.append(helper.make_node("MaxPool", [y], ["pooled"], kernel_shape=list(pool),
                                             strides=list(pool)))
        m.graph.output[0].name = "pooled"
    x = R.standard_normal(shape).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    one, two = _session(m, 1), _session(m, 2)
    for _ in range(3):              # general, then specialised (activation, pool fused)
        a = one.run(None, {"x": x})[0]
        b = two.run(None, {"x": x})[0]
        np.testing.assert_array_equal(a, b)
    tol = (2e-6 if tile == 2 else 2e-5) * np.sqrt(9 * cin)
    np.testing.assert_allclose(b, want, rtol=1e-5, atol=tol)
    assert any(n.endswith("_team") for n in _kernel_names(two)), _kernel_names(two)


def test_wino_split_keeps_denormals_and_the_direct_sum_for_nan(split_always):
    """The team's threads flush denormals for the recurrent kernels; a conv
    split over them computes in the caller's mode, as on one thread.  A NaN
    input takes the direct sum (on the first thread) with the split too."""
    m = _model(16, 16, None, pads=[1, 1, 1, 1])
    b = [i for i in m.graph.initializer if i.name == "b"][0]
    b.CopyFrom(numpy_helper.from_array(np.zeros(16, np.float32), "b"))
    x = (R.standard_normal((1, 16, 12, 12)) * 1e-39).astype(np.float32)     # denormals
    one, two = _session(m, 1), _session(m, 2)
    for _ in range(3):
        a = one.run(None, {"x": x})[0]
        np.testing.assert_array_equal(a, two.run(None, {"x": x})[0])
    assert np.count_nonzero(a) > a.size // 2       # not flushed to zero
    x = R.standard_normal((1, 16, 12, 12)).astype(np.float32)
    x[0, 3, 5, 5] = np.nan
    want = run_ort(m, {"x": x})[0]
    for _ in range(3):
        got = two.run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, one.run(None, {"x": x})[0])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_wino_split_chosen_by_tiles_per_thread():
    """Split only where every thread gets at least 6 tiles of each item."""
    m = _model(32, 32, None, pads=[1, 1, 1, 1])
    for shape, split in (((1, 32, 8, 25), True), ((1, 32, 4, 25), False)):
        x = R.standard_normal(shape).astype(np.float32)
        two = _session(m, 2)
        for _ in range(2):
            two.run(None, {"x": x})
        assert any(n.endswith("_team") for n in _kernel_names(two)) == split, shape
        one = _session(m, 1)
        one.run(None, {"x": x})
        assert not any(n.endswith("_team") for n in _kernel_names(one))
