"""Convs whose weights are a windowed real DFT basis (an STFT exported as a
Conv1d, as in Silero VAD) run as FFTs (fastlstm.kernels.dft); checked
against onnxruntime's conv on the same model."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm.kernels import dft
from helpers import run_ort

R = np.random.default_rng(5)


def _basis(N, F, sign=-1, window=None):
    n = np.arange(N)
    if window is None:
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N)      # periodic Hann
    ang = 2 * np.pi * np.outer(np.arange(F), n) / N
    w = np.concatenate([window * np.cos(ang), sign * window * np.sin(ang)])
    return w[:, None, :].astype(np.float32)


def _model(w, stride, bias=None, relu=False):
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["x", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["c" if relu else "y"], strides=[stride])]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 1, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _kernel_of(sess):
    runners = [r for r in sess._plan.runners if hasattr(r, "_fast")]
    return runners[0]._fast[3]


@pytest.mark.parametrize("N,F,sign,stride", [(256, 129, -1, 128), (64, 33, 1, 16),
                                             (32, 10, -1, 7), (8, 5, 1, 8)])
@pytest.mark.parametrize("batch,frames", [(1, 4), (3, 5), (17, 1)])
def test_stft_conv_matches_onnxruntime(N, F, sign, stride, batch, frames):
    """Batches that fill the eight lanes, leave them part empty and cross
    them; one frame and several; both signs of the sine rows."""
    w = _basis(N, F, sign)
    m = _model(w, stride)
    T = N + (frames - 1) * stride + (stride // 2)    # a tail shorter than a hop
    x = R.standard_normal((batch, 1, T)).astype(np.float32)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    got = sess.run(None, {"x": x})[0]
    assert isinstance(_kernel_of(sess), dft.STFTConv)
    want = run_ort(m, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * N)


def test_stft_conv_with_bias_and_a_window_of_its_own():
    w = _basis(64, 33, window=R.uniform(0.2, 1.0, 64))
    b = R.standard_normal(66).astype(np.float32)
    m = _model(w, 32, bias=b)
    x = R.standard_normal((2, 1, 200)).astype(np.float32)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    got = sess.run(None, {"x": x})[0]
    assert isinstance(_kernel_of(sess), dft.STFTConv)
    np.testing.assert_allclose(got, run_ort(m, {"x": x})[0], rtol=0, atol=1e-4)


def test_weights_that_are_not_a_dft_take_the_conv_kernels():
    w = _basis(64, 33)
    w[40, 0, 7] += 0.01                     # one weight off the basis
    assert dft.match_windowed_dft(w) is None
    assert dft.match_windowed_dft(_basis(64, 33)[:, :, :48]) is None     # not a power of 2
    m = _model(w, 16)
    x = R.standard_normal((1, 1, 160)).astype(np.float32)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    got = sess.run(None, {"x": x})[0]
    assert not isinstance(_kernel_of(sess), dft.STFTConv)
    np.testing.assert_allclose(got, run_ort(m, {"x": x})[0], rtol=0, atol=1e-4)


def test_a_fused_activation_takes_the_conv_kernels():
    """The FFT path applies no activation: a Conv + Relu keeps its kernels
    (in the specialised run, which fuses the Relu)."""
    m = _model(_basis(64, 33), 16, relu=True)
    x = R.standard_normal((2, 1, 160)).astype(np.float32)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    want = run_ort(m, {"x": x})[0]
    for _ in range(3):
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=0, atol=1e-4)
