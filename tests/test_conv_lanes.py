"""Convs with output channels across vector lanes (fastlstm.kernels.conv_lanes):
checked against onnxruntime, on shapes that exercise the kernel's paths."""
import numpy as np
import pytest

import fastlstm
from fastlstm.kernels.conv_lanes import LanesConv
from fastlstm.ops import conv as conv_op
from helpers import conv_model, run_ort

R = np.random.default_rng(21)

CASES = [
    # the speech model's two convs (DeepSpeech 2's front end), Clip fused
    (1, 8, (11, 5), "Clip", dict(pads=[5, 2, 5, 2], strides=[2, 2]), (1, 1, 64, 60)),
    (8, 8, (11, 5), "Clip", dict(pads=[5, 2, 5, 2], strides=[2, 1]), (1, 8, 32, 30)),
    # Relu, none; 16 output channels (two blocks of 8); two items
    (4, 16, (3, 3), "Relu", dict(pads=[1, 1, 1, 1]), (2, 4, 9, 21)),
    (3, 8, (3, 3), None, dict(pads=[1, 1, 1, 1]), (1, 3, 7, 16)),
    # a column stride of 3, a dilation, no pads, a kernel wider than a run
    # of weight registers (KW_RUN), asymmetric pads
    (2, 8, (3, 3), None, dict(strides=[1, 3]), (1, 2, 6, 40)),
    (2, 8, (3, 3), "Relu", dict(dilations=[2, 2], pads=[2, 2, 2, 2]), (1, 2, 10, 19)),
    (1, 8, (3, 7), None, dict(pads=[1, 0, 0, 3], strides=[2, 2]), (1, 1, 12, 37)),
    # activations the kernel does not compute: a pass after it
    (2, 8, (3, 3), "Sigmoid", dict(pads=[1, 1, 1, 1]), (1, 2, 5, 12)),
]


@pytest.mark.parametrize("cin,cout,ks,act,attrs,shape", CASES)
def test_lanes_conv_matches_onnxruntime(cin, cout, ks, act, attrs, shape, monkeypatch):
    monkeypatch.setattr(conv_op, "LANES", True)
    m = conv_model(R, cin, cout, ks, 1, act, **attrs)
    x = R.standard_normal(shape).astype(np.float32)
    if act is None:
        x.reshape(-1)[5] = np.nan      # a NaN reaches the outputs whose taps read it
    want = run_ort(m, {"x": x})[0]
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(3):              # general, then specialised (activation fused)
        got = sess.run(None, {"x": x})[0]
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    kernels = [r._fast[3] for r in sess._plan.runners if getattr(r, "_fast", (None,))[0]]
    assert any(_runs_lanes(k) for k in kernels)


def _runs_lanes(k):
    """The kernel is a LanesConv, or calls one and then an epilogue."""
    return isinstance(k, LanesConv) or any(
        isinstance(c.cell_contents, LanesConv) for c in getattr(k, "__closure__", None) or ())


def test_speech_convs_choose_lanes_and_others_do_not():
    """By default the speech model's 2-D convs run here; a 1-D conv, one of 12
    output channels and the one-channel 3x3 (conv_taps') do not."""
    def kernel(cin, cout, ks, shape, **attrs):
        m = conv_model(R, cin, cout, ks, **attrs)
        x = R.standard_normal(shape).astype(np.float32)
        sess = fastlstm.InferenceSession(m.SerializeToString())
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], run_ort(m, {"x": x})[0],
                                   rtol=1e-5, atol=2e-5)
        return type(sess._plan.runners[0]._fast[3]).__name__
    assert kernel(1, 8, (11, 5), (1, 1, 64, 80), pads=[5, 2, 5, 2], strides=[2, 2]) == \
        "LanesConv"
    assert kernel(8, 8, (11, 5), (1, 8, 32, 40), pads=[5, 2, 5, 2], strides=[2, 1]) == \
        "LanesConv"
    assert kernel(16, 8, (5,), (1, 16, 100), pads=[2, 2]) != "LanesConv"
    assert kernel(4, 12, (3, 3), (1, 4, 10, 40), pads=[1, 1, 1, 1]) != "LanesConv"
    assert kernel(1, 32, (3, 3), (1, 1, 32, 100), pads=[1, 1, 1, 1]) == "TapsConv"


def test_weights_packed_once_per_node():
    from fastlstm.kernels import conv_lanes
    w = np.arange(8 * 2 * 9 + 8, dtype=np.float32)
    a, nb = conv_lanes.pack(w, 8 * 2 * 9, 8)
    assert nb == 144
    # [block][cin][kh][kw][8 channels], then the bias
    np.testing.assert_array_equal(a[:144].reshape(1, 18, 8),
                                  w[:144].reshape(1, 8, 18).transpose(0, 2, 1))
    np.testing.assert_array_equal(a[144:], w[144:])
    # a node's runner packs them once, and its calls take that array
    m = conv_model(R, 2, 8, (3, 3), 1, None, pads=[1, 1, 1, 1], strides=[1, 2])
    sess = fastlstm.InferenceSession(m.SerializeToString())
    x = R.standard_normal((1, 2, 9, 40)).astype(np.float32)
    sess.run(None, {"x": x})
    (runner,) = sess._plan.runners
    assert isinstance(runner._fast[3], LanesConv)
    assert runner._fast[4] is runner._packed.lanes_weights()[0]
