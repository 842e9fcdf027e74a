"""Conv through kernels.conv.conv_rows (vectors along output columns, the
input split in stride phases), against onnxruntime: forced on for every
shape it takes (strides and dilations, padding, groups, 1-D to 3-D, batch,
rows shorter and longer than a tile, no bias) and as the runner chooses it,
with Relu, Sigmoid and Clip fused."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

import fastlstm
from helpers import run_ort

R = np.random.default_rng(3)


def _rand(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _model(xs, ws, attrs, bias=True):
    inits = [numpy_helper.from_array(_rand(*ws), "W")]
    ins = ["x", "W"]
    if bias:
        inits.append(numpy_helper.from_array(_rand(ws[0]), "B"))
        ins.append("B")
    node = helper.make_node("Conv", ins, ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, list(xs))],
                          [helper.make_tensor_value_info("y", 1, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


CASES = [
    ((1, 1, 30, 70), (8, 1, 11, 5), {"pads": [5, 2, 5, 2], "strides": [2, 2]}),
    ((1, 8, 16, 40), (8, 8, 11, 5), {"pads": [5, 2, 5, 2], "strides": [2, 1]}),
    ((2, 1, 9, 37), (32, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 4, 9, 50), (6, 4, 3, 5), {"strides": [1, 3], "pads": [1, 2, 1, 2]}),
    ((1, 3, 9, 40), (5, 3, 3, 3), {"dilations": [1, 3], "pads": [0, 3, 2, 1]}),
    ((1, 3, 12, 41), (5, 3, 3, 4), {"dilations": [2, 1], "strides": [2, 2]}),
    ((1, 4, 7, 33), (8, 2, 2, 3), {"group": 2, "pads": [1, 0, 0, 1]}),
    ((1, 16, 60), (4, 16, 5), {"pads": [2, 2]}),
    ((1, 2, 90), (7, 2, 4), {"strides": [4], "pads": [1, 3]}),
    ((1, 2, 3, 5, 40), (4, 2, 2, 3, 3), {"pads": [1, 0, 1, 1, 1, 1], "strides": [1, 1, 2]}),
    ((1, 20, 5, 9), (6, 20, 3, 3), {"pads": [1, 1, 1, 1]}),     # rows shorter than a tile
    ((1, 1, 5, 17), (4, 1, 1, 2), {}),
]


@pytest.fixture
def rows_on(monkeypatch):
    from fastlstm.ops import conv as conv_ops
    monkeypatch.setattr(conv_ops, "ROWS", True)


def _tol(ws):
    return 1e-5 * max(1.0, np.sqrt(np.prod(ws[1:])))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,ws,attrs", CASES, ids=[f"{c[1]}-{k}" for k, c in enumerate(CASES)])
def test_conv_rows_forced(xs, ws, attrs, bias, rows_on):
    model = _model(xs, ws, attrs, bias)
    x = _rand(*xs)
    exp = run_ort(model, {"x": x})[0]
    sess = fastlstm.InferenceSession(model.SerializeToString())
    (runner,) = sess._plan.runners
    got = runner.run1(x)
    assert runner._fast[3].py_func.__name__ == "conv_rows"
    np.testing.assert_allclose(got, exp, atol=_tol(ws), rtol=1e-4)
    for _ in range(3):
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], exp, atol=_tol(ws), rtol=1e-4)
    for act, ref in (("Relu", np.maximum(exp, 0)), ("Sigmoid", 1 / (1 + np.exp(-exp)))):
        f = runner.fused(act)
        np.testing.assert_allclose(f.run1(x), ref, atol=_tol(ws), rtol=1e-4, err_msg=act)
        assert f._fast[3].py_func.__name__ == "conv_rows"
    f = runner.fused("Clip", (-0.5, 0.75))
    np.testing.assert_allclose(f.run1(x), np.clip(exp, -0.5, 0.75), atol=_tol(ws), rtol=1e-4)


@pytest.mark.parametrize("xs,ws,attrs", [
    ((1, 4, 20, 90), (6, 4, 3, 5), {"pads": [1, 2, 1, 2], "strides": [1, 3]}),
    ((1, 16, 400), (8, 16, 5), {"pads": [2, 2]}),
])
def test_conv_rows_chosen(xs, ws, attrs):
    """Few output channels not a multiple of 8, and a 1-D conv, take
    conv_rows by default (the speech model's 2-D convs take conv_lanes:
    tests/test_conv_lanes.py; the CRNN's first, 3x3 over one channel,
    conv_taps: tests/test_conv_taps.py)."""
    model = _model(xs, ws, attrs)
    x = _rand(*xs)
    sess = fastlstm.InferenceSession(model.SerializeToString())
    (runner,) = sess._plan.runners
    np.testing.assert_allclose(runner.run1(x), run_ort(model, {"x": x})[0], atol=_tol(ws),
                               rtol=1e-4)
    assert runner._fast[3].py_func.__name__ == "conv_rows"
