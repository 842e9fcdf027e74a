"""MaxPool and AveragePool on rows long enough for the kernels' fast path
(8 outputs at a time, windows wholly inside the input: fastlstm.kernels.pool),
with the general path at the borders, against onnxruntime; NaN and infinities
against a NumPy reference; the specialised executor's bound pools
(fastlstm.ops.conv._bind_pool) through a session's repeated runs."""
import numpy as np
import onnx
import pytest
from onnx import helper

import fastlstm
from helpers import run_ort

R = np.random.default_rng(11)


def _model(op, xs, attrs, opset, n_out=1):
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, ["x"], outs, name="pool", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, list(xs))],
                          [onnx.ValueInfoProto(name=o) for o in outs])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _run(model, x, runs=3):
    sess = fastlstm.InferenceSession(model.SerializeToString())
    out = None
    for _ in range(runs):      # later runs take the specialised executor's path
        out = sess.run(None, {"x": x})
    return out


# (x shape, attrs): strides 1, 2 (the shuffled loads), 3 and 4 (scalar loads)
# along W; rows of 8 to 70 outputs (groups of 32, 16, 8 and the overlapping
# last 8); pads and ceil_mode put the general path at one or both ends
CASES = [
    ((1, 3, 8, 40), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 4, 9, 51), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 5, 8, 25), {"kernel_shape": [2, 1], "strides": [2, 1]}),
    ((1, 3, 8, 25), {"kernel_shape": [4, 1], "strides": [4, 1]}),
    ((1, 2, 7, 70), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ((1, 2, 6, 61), {"kernel_shape": [2, 3], "strides": [1, 3], "pads": [0, 2, 1, 1]}),
    ((1, 2, 5, 77), {"kernel_shape": [1, 4], "strides": [1, 4]}),
    ((1, 2, 5, 40), {"kernel_shape": [2, 3], "dilations": [2, 2]}),
    ((1, 2, 5, 41), {"kernel_shape": [3, 2], "strides": [1, 2], "dilations": [1, 3],
                     "pads": [1, 1, 1, 0]}),
    ((2, 3, 50), {"kernel_shape": [3], "strides": [2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 3, 4, 36), {"kernel_shape": [2, 2, 2], "strides": [1, 2, 1]}),
    ((1, 2, 9, 34), {"kernel_shape": [2, 2]}),
]
_IDS = [f"{c[0]}-{k}" for k, c in enumerate(CASES)]


def _opset(attrs, op):
    if "dilations" in attrs:
        return 19 if op == "AveragePool" else 12
    return 17


@pytest.mark.parametrize("xs,attrs", CASES, ids=_IDS)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_fast_path_vs_onnxruntime(op, xs, attrs):
    x = R.standard_normal(xs).astype(np.float32)
    model = _model(op, xs, attrs, _opset(attrs, op))
    exp = run_ort(model, {"x": x})[0]
    got = _run(model, x)[0]
    assert got.shape == exp.shape and got.dtype == exp.dtype
    np.testing.assert_allclose(got, exp, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("pad", [0, 1])
def test_average_pool_count_include_pad(pad):
    xs = (1, 3, 7, 45)
    attrs = {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [1, 1, 1, 1],
             "count_include_pad": pad}
    x = R.standard_normal(xs).astype(np.float32)
    model = _model("AveragePool", xs, attrs, 17)
    np.testing.assert_allclose(_run(model, x)[0], run_ort(model, {"x": x})[0],
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices_on_long_rows(storage_order):
    """Indices take the general path everywhere; values and indices as onnxruntime."""
    xs = (2, 3, 8, 40)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": storage_order}
    x = R.standard_normal(xs).astype(np.float32)
    model = _model("MaxPool", xs, attrs, 12, n_out=2)
    got = _run(model, x)
    exp = run_ort(model, {"x": x})
    np.testing.assert_array_equal(got[0], exp[0])
    np.testing.assert_array_equal(got[1], exp[1])


def _windows(x, k, s):
    """[N, C, OH, OW, kh*kw] windows of a 2-D pooling without padding."""
    N, C, H, W = x.shape
    oh, ow = (H - k[0]) // s[0] + 1, (W - k[1]) // s[1] + 1
    out = np.empty((N, C, oh, ow, k[0] * k[1]), x.dtype)
    for i in range(k[0]):
        for j in range(k[1]):
            out[..., i * k[1] + j] = x[:, :, i:i + s[0] * oh:s[0], j:j + s[1] * ow:s[1]]
    return out


@pytest.mark.parametrize("k,s", [([2, 2], [2, 2]), ([3, 3], [1, 1]), ([2, 3], [1, 3])])
def test_nan_and_infinities(k, s):
    """A window with a NaN gives NaN, -inf and +inf take part as values: NumPy's
    max and mean over the windows (onnxruntime's MaxPool does not promise NaN)."""
    xs = (1, 2, 9, 48)
    x = R.standard_normal(xs).astype(np.float32)
    flat = x.reshape(-1)
    pick = R.choice(flat.size, 60, replace=False)
    flat[pick[:20]] = np.nan
    flat[pick[20:40]] = np.inf
    flat[pick[40:]] = -np.inf
    win = _windows(x, k, s)
    for op, ref in (("MaxPool", win.max(axis=-1)), ("AveragePool", None)):
        model = _model(op, xs, {"kernel_shape": k, "strides": s}, 17)
        got = _run(model, x)[0]
        if ref is None:
            with np.errstate(invalid="ignore"):
                ref = win.sum(axis=-1, dtype=np.float32) / np.float32(k[0] * k[1])
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_all_minus_infinity_and_signed_zeros():
    """Windows of -inf give -inf (the fast path starts its max from -inf); of equal
    values the first in tap order is kept, as the general path keeps it."""
    xs = (1, 1, 4, 32)
    x = np.full(xs, -np.inf, np.float32)
    model = _model("MaxPool", xs, {"kernel_shape": [2, 2], "strides": [2, 2]}, 17)
    assert np.all(_run(model, x)[0] == -np.inf)
    x = np.zeros(xs, np.float32)
    x[:, :, 0::2, :] = -0.0         # the first tap of every window is -0
    got = _run(model, x)[0]
    assert np.all(got == 0) and np.all(np.signbit(got))


def test_read_only_input_and_other_shape():
    """The bound pool copies a read-only X and falls back to the general path for
    a shape other than the recorded one."""
    model = _model("MaxPool", ["N", 3, 8, "W"], {"kernel_shape": [2, 2],
                                                "strides": [2, 2]}, 17)
    sess = fastlstm.InferenceSession(model.SerializeToString())
    for shape in [(1, 3, 8, 40), (1, 3, 8, 40), (2, 3, 8, 18), (1, 3, 8, 40)]:
        x = R.standard_normal(shape).astype(np.float32)
        x.flags.writeable = False
        exp = run_ort(model, {"x": x})[0]
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], exp)
