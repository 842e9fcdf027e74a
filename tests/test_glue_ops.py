"""The glue ops, one node at a time, in the forms that changed across opsets,
against onnxruntime."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import InvalidInput, UnsupportedOp
from helpers import run_ort

R = np.random.default_rng(0)
X = R.standard_normal((2, 3, 4)).astype(np.float32)
I64 = np.int64


def _model(op, inputs, attrs, opset, n_out=1, consts=()):
    """inputs: list of (name, array); names in consts become initializers."""
    names = [n for n, _ in inputs]
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, name="the_node", **attrs)
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                          list(a.shape)) for n, a in inputs if n not in consts]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if n in consts]
    g = helper.make_graph([node], "g", g_in, [onnx.ValueInfoProto(name=o) for o in outs],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


CASES = [
    ("Squeeze", [("x", X[:, :1])], {"axes": [1]}, 11, 1),
    ("Squeeze", [("x", X[:, :1]), ("a", np.array([1], I64))], {}, 13, 1),
    ("Unsqueeze", [("x", X)], {"axes": [0, 3]}, 11, 1),
    ("Unsqueeze", [("x", X), ("a", np.array([-1, 0], I64))], {}, 13, 1),
    ("Slice", [("x", X)], {"starts": [1, 0], "ends": [100, -1], "axes": [2, 1]}, 9, 1),
    ("Slice", [("x", X), ("s", np.array([3, -1], I64)), ("e", np.array([0, -100], I64)),
               ("a", np.array([2, 1], I64)), ("st", np.array([-1, -2], I64))], {}, 13, 1),
    ("Split", [("x", X)], {"axis": 2, "split": [1, 3]}, 11, 2),
    ("Split", [("x", X), ("s", np.array([2, 2], I64))], {"axis": -1}, 13, 2),
    ("Split", [("x", X)], {"axis": 1, "num_outputs": 2}, 18, 2),
    ("Softmax", [("x", X)], {"axis": 1}, 11, 1),
    ("Softmax", [("x", X)], {}, 13, 1),
    ("LogSoftmax", [("x", X)], {"axis": 0}, 11, 1),
    ("ReduceMean", [("x", X)], {"axes": [1], "keepdims": 0}, 13, 1),
    ("ReduceMean", [("x", X), ("a", np.array([0, 2], I64))], {}, 18, 1),
    ("ReduceSum", [("x", X), ("a", np.array([1], I64))], {"keepdims": 0}, 13, 1),
    ("Reshape", [("x", X), ("s", np.array([0, -1], I64))], {}, 14, 1),
    ("Transpose", [("x", X)], {"perm": [2, 0, 1]}, 13, 1),
    ("Gather", [("x", X), ("i", np.array([[0, -1], [1, 2]], I64))], {"axis": 1}, 13, 1),
    ("Gemm", [("a", X[0]), ("b", X[1]), ("c", X[0, 0, :3].copy())],
     {"transB": 1, "alpha": 0.5, "beta": 2.0}, 13, 1),
    ("MatMul", [("a", X), ("b", X[0].T.copy())], {}, 13, 1),
    ("Concat", [("a", X), ("b", X)], {"axis": -1}, 13, 1),
    ("Flatten", [("x", X)], {"axis": 2}, 13, 1),
    ("ArgMax", [("x", X)], {"axis": 2, "keepdims": 0}, 13, 1),
    ("Expand", [("x", X[:, :1]), ("s", np.array([2, 3, 1], I64))], {}, 13, 1),
    ("Where", [("c", X > 0), ("a", X), ("b", -X)], {}, 13, 1),
    ("Equal", [("a", np.array([1, 2, 3], I64)), ("b", np.array([1, 0, 3], I64))], {}, 13, 1),
    ("Cast", [("x", X)], {"to": TensorProto.INT64}, 13, 1),
    ("Shape", [("x", X)], {"start": 1}, 15, 1),
    ("ConstantOfShape", [("s", np.array([2, 3], I64))],
     {"value": numpy_helper.from_array(np.array([1.5], np.float32))}, 13, 1),
    ("Range", [("a", np.array(2, I64)), ("b", np.array(11, I64)), ("c", np.array(3, I64))],
     {}, 13, 1),
    ("TopK", [("x", X), ("k", np.array([2], I64))], {"axis": 1}, 13, 2),
    ("Dropout", [("x", X)], {}, 13, 1),
    ("Div", [("a", np.array([7, -7, 9], I64)), ("b", np.array([2, 2, 3], I64))], {}, 13, 1),
    ("Sigmoid", [("x", X * 30)], {}, 13, 1),
]


@pytest.mark.parametrize("op,inputs,attrs,opset,n_out", CASES,
                         ids=[f"{c[0]}-{c[3]}-{k}" for k, c in enumerate(CASES)])
def test_glue_op(op, inputs, attrs, opset, n_out):
    model = _model(op, inputs, attrs, opset, n_out)
    feed = dict(inputs)
    got = fastlstm.InferenceSession(model.SerializeToString()).run(None, feed)
    exp = run_ort(model, feed)
    for g, e in zip(got, exp):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)
    # the same with the inputs as constants, folded at import
    model = _model(op, inputs, attrs, opset, n_out, consts=[n for n, _ in inputs])
    sess = fastlstm.InferenceSession(model.SerializeToString())
    assert not sess._graph.nodes          # folded
    for g, e in zip(sess.run(None, {}), exp):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


def test_glue_errors_name_the_node():
    model = _model("Reshape", [("x", X), ("s", np.array([5, -1], I64))], {}, 14)
    with pytest.raises(InvalidInput, match="the_node"):
        fastlstm.InferenceSession(model.SerializeToString()).run(None, {"x": X, "s":
                                                                        np.array([5, -1], I64)})
    model = _model("Gather", [("x", X), ("i", np.array([7], I64))], {"axis": 1}, 13)
    with pytest.raises(InvalidInput, match="out of range"):
        fastlstm.InferenceSession(model.SerializeToString()).run(None, {"x": X, "i":
                                                                        np.array([7], I64)})
    model = _model("Softmax", [("x", X)], {"axis": 1, "frobnicate": 2}, 13)
    with pytest.raises(UnsupportedOp, match="frobnicate"):
        fastlstm.InferenceSession(model.SerializeToString())
    model = _model("Dropout", [("x", X), ("r", np.array(0.5, np.float32)),
                               ("t", np.array(True))], {}, 13)
    with pytest.raises(UnsupportedOp, match="training_mode"):
        fastlstm.InferenceSession(model.SerializeToString()).run(
            None, {"x": X, "r": np.array(0.5, np.float32), "t": np.array(True)})


def test_sigmoid_and_tanh_give_the_same_bits_on_every_call():
    """A Sigmoid run alone (a session's first, unspecialised calls) computes
    with the fused loops' float32 form, as the specialised run does; a Tanh
    alone takes numpy's tanh in both: every call gives the same bits, a row
    alone those it has in a batch, close to onnxruntime's."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Tanh", ["x"], ["t"]),
             helper.make_node("Mul", ["s", "t"], ["m"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [None, 37])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                           for n in ("s", "t", "m")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(4).uniform(-12, 12, (5, 37)).astype(np.float32)
    x[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    sess = fastlstm.InferenceSession(m.SerializeToString())
    runs = [sess.run(None, {"x": x}) for _ in range(4)]
    for later in runs[1:]:
        for a, b in zip(runs[0], later):
            np.testing.assert_array_equal(a, b)
    # one row alone: the same bits as in the batch
    for a, b in zip(sess.run(None, {"x": x[3:4]}), runs[0]):
        np.testing.assert_array_equal(a[0], b[3])
    for a, b in zip(runs[0], run_ort(m, {"x": x})):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=4e-7)
