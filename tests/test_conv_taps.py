"""Convs with one input channel per group and a small kernel run with their
taps unrolled (fastlstm.kernels.conv_taps); checked against onnxruntime."""
import numpy as np
import pytest

import fastlstm
from fastlstm.kernels.conv_taps import TapsConv
from helpers import conv_model, run_ort

R = np.random.default_rng(9)


def _model(cin, cout, ks, group=1, act=None, **attrs):
    return conv_model(R, cin, cout, ks, group, act, **attrs)


CASES = [
    # the CRNN's first conv with its activation, fused or not
    (1, 32, (3, 3), 1, None, dict(pads=[1, 1, 1, 1]), (1, 1, 32, 100)),
    (1, 32, (3, 3), 1, "Relu", dict(pads=[1, 1, 1, 1]), (2, 1, 32, 100)),
    (1, 8, (3, 3), 1, "Sigmoid", dict(pads=[1, 1, 1, 1]), (1, 1, 9, 20)),
    (1, 8, (3, 3), 1, "Clip", dict(pads=[0, 2, 1, 0]), (1, 1, 9, 20)),
    # 5x5, a row stride, asymmetric pads; no pads
    (1, 6, (5, 5), 1, None, dict(pads=[2, 1, 0, 2], strides=[2, 1]), (1, 1, 21, 40)),
    (1, 4, (2, 3), 1, None, {}, (3, 1, 7, 30)),
    # depthwise, and groups of one input channel with two outputs each
    (16, 16, (3, 3), 16, "Relu", dict(pads=[1, 1, 1, 1]), (1, 16, 12, 33)),
    (4, 8, (3, 3), 4, None, dict(pads=[1, 1, 1, 1]), (2, 4, 5, 16)),
    # 1-D
    (1, 12, (5,), 1, None, dict(pads=[2, 2]), (2, 1, 64)),
]


@pytest.mark.parametrize("cin,cout,ks,group,act,attrs,shape", CASES)
def test_taps_conv_matches_onnxruntime(cin, cout, ks, group, act, attrs, shape):
    m = _model(cin, cout, ks, group, act, **attrs)
    x = R.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[3] = np.nan if act is None else x.reshape(-1)[3]
    want = run_ort(m, {"x": x})[0]
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(3):              # general, then specialised (activation fused)
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    kernels = [r._fast[3] for r in sess._plan.runners if getattr(r, "_fast", (None,))[0]]
    assert any(isinstance(k, TapsConv) for k in kernels)


def test_more_taps_or_input_channels_take_other_kernels():
    for cin, ks in ((2, (3, 3)), (1, (7, 7))):
        m = _model(cin, 8, ks, pads=[1] * 4)
        x = R.standard_normal((1, cin, 12, 20)).astype(np.float32)
        sess = fastlstm.InferenceSession(m.SerializeToString())
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], run_ort(m, {"x": x})[0],
                                   rtol=1e-5, atol=1e-5)
        assert not any(isinstance(getattr(r, "_fast", (None,) * 4)[3], TapsConv)
                       for r in sess._plan.runners)
