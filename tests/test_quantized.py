"""Models quantized by onnxruntime's own tools, run against onnxruntime.

Float models are built here with onnx.helper and quantized with
``onnxruntime.quantization.quantize_dynamic`` (and saved again by
onnxruntime's optimizer, which fuses MatMuls into DynamicQuantizeMatMul).

Tolerance.  fastlstm follows onnxruntime's integer scheme
(``fastlstm.ops.quantized``): the quantized values and the integer products
are equal (checked exactly below for the integer ops).  After the integers
the float operations may round differently (sum order, the activations'
last bits: ~1e-7 relative).  In a recurrent layer h is re-quantized every
step, so such a difference can put one element of h on the other side of a
rounding boundary: that element moves by one step ``s_h = range(h) / 255``,
and each gate pre-activation by at most ``s_h * max|R|``, which the gates
pass on with slope <= 1.  So a flipped rounding changes outputs by at most
``FLIP = (2/255) * max|R|`` (|h| <= 1), and with no flip the difference is
float rounding (1e-6).  The tests allow one flip's worth; what they measure
is ~2e-7 (no flip on these inputs).
"""
import logging

import numpy as np
import pytest

import fastlstm
from fastlstm import fileformat
from fastlstm.onnx_import import load_graph
from fastlstm.pack import pack_graph
from fastlstm.simplify import simplify

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")
from onnx import TensorProto, helper, numpy_helper as nh  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)   # quantize_dynamic's pre-processing hint


def _ort(model, feed, outputs=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(
        outputs, feed)


def _model(nodes, inputs, outputs, inits, opset=14):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _quantize(tmp_path, model, **kw):
    f, q = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, f)
    quantization.quantize_dynamic(str(f), str(q), **kw)
    return str(q)


def _flip(q_path):
    """One rounding flip's worth of output change (module docstring)."""
    m = onnx.load(q_path)
    inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
    tol = 1e-5
    for n in m.graph.node:
        if n.op_type == "DynamicQuantizeLSTM":
            R = inits[n.input[2]].astype(np.float64)
            s = inits[n.input[10]].astype(np.float64)
            s = s.reshape(s.shape[0], 1, -1) if s.ndim == 2 else s.reshape(-1, 1, 1)
            tol = max(tol, 2 / 255 * float(np.abs(R * s).max()))
    return tol


def _lstm(rng, I, H, D, scale=0.2):
    G = 4
    inits = [nh.from_array((rng.standard_normal((D, G * H, I)) * scale).astype(np.float32), "W"),
             nh.from_array((rng.standard_normal((D, G * H, H)) * scale).astype(np.float32), "R"),
             nh.from_array((rng.standard_normal((D, 2 * G * H)) * 0.1).astype(np.float32), "B")]
    return inits


@pytest.mark.parametrize("direction,per_channel", [("forward", False), ("bidirectional", True),
                                                   ("reverse", True)])
def test_dynamic_quantize_lstm(tmp_path, direction, per_channel):
    rng = np.random.default_rng(3)
    I, H, D = 24, 40, 2 if direction == "bidirectional" else 1
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction=direction)
    m = _model([node], [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I]),
                        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [D, "B", H]),
                        helper.make_tensor_value_info("c0", TensorProto.FLOAT, [D, "B", H])],
               [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                for o in ("Y", "Y_h", "Y_c")], _lstm(rng, I, H, D))
    q = _quantize(tmp_path, m, per_channel=per_channel)
    assert [n.op_type for n in onnx.load(q).graph.node] == ["DynamicQuantizeLSTM"]
    feed = {"X": rng.standard_normal((30, 3, I)).astype(np.float32),
            "h0": rng.uniform(-0.5, 0.5, (D, 3, H)).astype(np.float32),
            "c0": rng.uniform(-0.5, 0.5, (D, 3, H)).astype(np.float32)}
    ref = _ort(q, feed)
    sess = fastlstm.InferenceSession(q)
    tol = _flip(q)
    for _ in range(2):
        for a, b in zip(sess.run(None, feed), ref):
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)
    # packed once into a .fastlstm file (``fastlstm convert``): the same outputs
    f = tmp_path / "q.fastlstm"
    fileformat.save(pack_graph(simplify(load_graph(q))), str(f))
    for a, b in zip(fastlstm.InferenceSession(str(f)).run(None, feed), sess.run(None, feed)):
        np.testing.assert_array_equal(a, b)


def test_integer_ops_exact():
    """MatMulInteger (uint8 x int8 saturating as onnxruntime's AVX2 kernel, per-column
    zero points), ConvInteger, DynamicQuantizeLinear, QuantizeLinear and
    DequantizeLinear (per axis): every integer equal to onnxruntime's."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 7, 64)).astype(np.uint8)
    a[0, 0] = 255                                   # pairs that saturate int16
    b = rng.integers(-127, 128, (64, 24)).astype(np.int8)
    b[:, 0] = 127
    bz = rng.integers(-3, 4, 24).astype(np.int8)
    x = rng.integers(0, 256, (2, 6, 20, 9)).astype(np.uint8)
    w = rng.integers(-127, 128, (8, 3, 3, 3)).astype(np.int8)
    f = (rng.standard_normal((3, 5, 4)) * 3).astype(np.float32)
    qs = np.array([0.02, 0.05, 0.1, 0.03], np.float32)
    qz = np.array([-3, 0, 5, 100], np.int8)
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["mm"]),
             helper.make_node("ConvInteger", ["x", "w", "xz"], ["cv"], pads=[1, 0, 1, 2],
                              strides=[2, 1], group=2),
             helper.make_node("DynamicQuantizeLinear", ["f"], ["dq", "ds", "dz"]),
             helper.make_node("QuantizeLinear", ["f", "qs", "qz"], ["ql"], axis=2),
             helper.make_node("DequantizeLinear", ["ql", "qs", "qz"], ["dl"], axis=-1)]
    w2 = rng.integers(-127, 128, (8, 3, 3, 3)).astype(np.int8)
    inits = [nh.from_array(b, "b"), nh.from_array(bz, "bz"),
             nh.from_array(np.array(7, np.uint8), "az"), nh.from_array(np.array(9, np.uint8), "xz"),
             nh.from_array(qs, "qs"), nh.from_array(qz, "qz")]
    m = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.UINT8, None),
                       helper.make_tensor_value_info("x", TensorProto.UINT8, None),
                       helper.make_tensor_value_info("w", TensorProto.INT8, None),
                       helper.make_tensor_value_info("f", TensorProto.FLOAT, None)],
               [helper.make_tensor_value_info(o, t, None) for o, t in (
                   ("mm", TensorProto.INT32), ("cv", TensorProto.INT32),
                   ("dq", TensorProto.UINT8), ("ds", TensorProto.FLOAT),
                   ("dz", TensorProto.UINT8), ("ql", TensorProto.INT8),
                   ("dl", TensorProto.FLOAT))], inits, opset=13)
    x6 = np.concatenate([x, x], axis=1)[:, :6]
    feed = {"a": a, "x": x6, "w": w2[:, :3], "f": f}
    ref = _ort(m.SerializeToString(), feed)
    out = fastlstm.InferenceSession(m.SerializeToString()).run(None, feed)
    for name, r, o in zip(("mm", "cv", "dq", "ds", "dz", "ql", "dl"), ref, out):
        assert r.dtype == o.dtype and r.shape == o.shape, name
        np.testing.assert_array_equal(o, r, err_msg=name)
    # the saturation is real: exact products differ from onnxruntime's there
    exact = (a.astype(np.int64) - 7) @ (b.astype(np.int64) - bz)
    assert (exact != ref[0]).any()


def _reader(rng, C=16, F=32, H=40, K=10):
    """Conv1d + Relu -> bidirectional LSTM -> dense head (logits per frame)."""
    def t(a, n):
        return nh.from_array(a.astype(np.float32), n)
    inits = [t(rng.standard_normal((F, C, 3)) * 0.3, "cw"), t(rng.standard_normal(F) * 0.1, "cb"),
             *_lstm(rng, F, H, 2),
             t(rng.standard_normal((2 * H, K)) * 0.2, "dw"), t(rng.standard_normal(K) * 0.1, "db"),
             nh.from_array(np.array([0, 0, -1], np.int64), "shp")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Transpose", ["r"], ["rt"], perm=[2, 0, 1]),
             helper.make_node("LSTM", ["rt", "W", "R", "B"], ["y"], hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["yt", "shp"], ["yr"]),
             helper.make_node("MatMul", ["yr", "dw"], ["mm"]),
             helper.make_node("Add", ["mm", "db"], ["logits"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, "T"])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)


@pytest.mark.parametrize("optimized", [False, True])
def test_conv_bilstm_reader(tmp_path, optimized):
    """quantize_dynamic's ConvInteger, DynamicQuantizeLinear, DynamicQuantizeLSTM and
    MatMulInteger (or, saved by onnxruntime's optimizer, DynamicQuantizeMatMul)."""
    rng = np.random.default_rng(0)
    q = _quantize(tmp_path, _reader(rng))
    if optimized:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / "qo.onnx")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])
        q = str(tmp_path / "qo.onnx")
    ops = {n.op_type for n in onnx.load(q).graph.node}
    assert {"ConvInteger", "DynamicQuantizeLSTM"} <= ops
    assert ("DynamicQuantizeMatMul" in ops) == optimized
    sess = fastlstm.InferenceSession(q)
    tol = _flip(q)
    for T in (50, 50, 17):      # the second run of a signature is the specialised one
        x = rng.standard_normal((1, 16, T)).astype(np.float32)
        ref = _ort(q, {"x": x})[0]
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], ref, rtol=0, atol=tol)
    # packed once into a .fastlstm file: the same outputs (within rounding: a
    # first run is not the specialised one, whose products may be fused)
    f = tmp_path / "q.fastlstm"
    fileformat.save(pack_graph(simplify(load_graph(q))), str(f))
    np.testing.assert_allclose(fastlstm.InferenceSession(str(f)).run(None, {"x": x})[0],
                               sess.run(None, {"x": x})[0], rtol=0, atol=1e-6)


def test_fused_matmul_forms():
    """DynamicQuantizeMatMul (int8 and uint8 B, per-column scales, bias) and
    MatMulIntegerToFloat against onnxruntime."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 3, 48)).astype(np.float32)
    Bs8 = rng.integers(-127, 128, (48, 20)).astype(np.int8)
    Bu8 = rng.integers(0, 256, (48, 20)).astype(np.uint8)
    bs = (rng.random(20) * 0.01 + 0.001).astype(np.float32)
    bias = rng.standard_normal(20).astype(np.float32)
    Aq = rng.integers(0, 256, (5, 48)).astype(np.uint8)
    nodes = [helper.make_node("DynamicQuantizeMatMul", ["A", "Bs8", "bs", "", "bias"], ["y1"],
                              domain="com.microsoft"),
             helper.make_node("DynamicQuantizeMatMul", ["A", "Bu8", "bs1", "bz"], ["y2"],
                              domain="com.microsoft"),
             helper.make_node("MatMulIntegerToFloat", ["Aq", "Bs8", "as", "bs", "az", "", "bias"],
                              ["y3"], domain="com.microsoft")]
    inits = [nh.from_array(Bs8, "Bs8"), nh.from_array(Bu8, "Bu8"), nh.from_array(bs, "bs"),
             nh.from_array(np.array(0.004, np.float32), "bs1"),
             nh.from_array(np.array(131, np.uint8), "bz"), nh.from_array(bias, "bias"),
             nh.from_array(np.array(0.03, np.float32), "as"),
             nh.from_array(np.array(128, np.uint8), "az")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, None),
                                       helper.make_tensor_value_info("Aq", TensorProto.UINT8, None)],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in ("y1", "y2", "y3")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    feed = {"A": A, "Aq": Aq}
    ref = _ort(m.SerializeToString(), feed)
    out = fastlstm.InferenceSession(m.SerializeToString()).run(None, feed)
    for r, o in zip(ref, out):
        np.testing.assert_allclose(o, r, rtol=1e-6, atol=1e-6 * np.abs(r).max())


def test_other_microsoft_ops_refused_by_name():
    node = helper.make_node("QAttention", ["x"], ["y"], domain="com.microsoft")
    m = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(fastlstm.UnsupportedOp, match="com.microsoft.*DynamicQuantizeLSTM"):
        fastlstm.InferenceSession(m.SerializeToString())
