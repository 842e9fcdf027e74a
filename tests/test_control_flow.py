"""If: folded at load when its condition is constant, specialised per fed
value otherwise, and run as a sub-plan in general; against onnxruntime."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from helpers import run_ort

R = np.random.default_rng(3)


def _branch(name, nodes, outs, inits=()):
    return helper.make_graph(nodes, name, [], [onnx.ValueInfoProto(name=o) for o in outs],
                             list(inits))


def _if_model(cond_from, opset=16):
    """y = If(cond) then x * w + 1 else relu(x) - w; the branches read outer x, w.

    cond_from: 'input' (a bool input c), 'const' (a constant true), 'shape'
    (whether x has 3 columns), 'sr' (whether int64 input sr == 16000)."""
    w = R.standard_normal((1, 3)).astype(np.float32)
    one = numpy_helper.from_array(np.ones((1,), np.float32), "one")
    then = _branch("then", [helper.make_node("Mul", ["x", "w"], ["t0"]),
                            helper.make_node("Add", ["t0", "one"], ["t1"])], ["t1"], [one])
    els = _branch("else", [helper.make_node("Relu", ["x"], ["e0"]),
                           helper.make_node("Sub", ["e0", "w"], ["e1"])], ["e1"])
    nodes, inputs = [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])]
    inits = [numpy_helper.from_array(w, "w")]
    if cond_from == "input":
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
        cond = "c"
    elif cond_from == "const":
        inits.append(numpy_helper.from_array(np.array(True), "c"))
        cond = "c"
    elif cond_from == "shape":
        inits += [numpy_helper.from_array(np.array(1, np.int64), "k1"),
                  numpy_helper.from_array(np.array(2, np.int64), "k2")]
        nodes += [helper.make_node("Shape", ["x"], ["s"]),
                  helper.make_node("Gather", ["s", "k1"], ["s1"]),
                  helper.make_node("Equal", ["s1", "k2"], ["c"])]
        cond = "c"
    else:
        inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
        inits.append(numpy_helper.from_array(np.array(16000, np.int64), "k16"))
        nodes.append(helper.make_node("Equal", ["sr", "k16"], ["c"]))
        cond = "c"
    nodes.append(helper.make_node("If", [cond], ["y"], name="the_if", then_branch=then,
                                  else_branch=els))
    g = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name="y")], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("cond_from", ["input", "const", "shape", "sr"])
def test_if_matches_onnxruntime(cond_from):
    m = _if_model(cond_from)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    feeds = []
    for n in (1, 4):
        x = R.standard_normal((n, 3)).astype(np.float32)
        if cond_from == "input":
            feeds += [{"x": x, "c": np.array(v)} for v in (True, False)]
        elif cond_from == "sr":
            feeds += [{"x": x, "sr": np.array(v, np.int64)} for v in (16000, 8000, 16000)]
        else:
            feeds.append({"x": x})
    for feed in feeds:
        want = run_ort(m, feed)[0]
        got, = sess.run(None, feed)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_constant_if_is_spliced_at_load():
    sess = fastlstm.InferenceSession(_if_model("const").SerializeToString())
    assert "If" not in [n.op_type for n in sess._graph.nodes]


def test_nested_if_and_bad_condition():
    inner = _if_model("input").graph.node[-1]
    outer_then = _branch("ot", [inner], ["y"])
    outer_else = _branch("oe", [helper.make_node("Neg", ["x"], ["z"])], ["z"])
    g = helper.make_graph(
        [helper.make_node("If", ["c2"], ["out"], name="outer", then_branch=outer_then,
                          else_branch=outer_else)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("c2", TensorProto.BOOL, [])],
        [onnx.ValueInfoProto(name="out")],
        [numpy_helper.from_array(R.standard_normal((1, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(np.ones((1,), np.float32), "one")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    sess = fastlstm.InferenceSession(m.SerializeToString())
    x = R.standard_normal((2, 3)).astype(np.float32)
    for c in (True, False):
        for c2 in (True, False):
            feed = {"x": x, "c": np.array(c), "c2": np.array(c2)}
            np.testing.assert_allclose(sess.run(None, feed)[0], run_ort(m, feed)[0],
                                       rtol=1e-6, atol=1e-6)


def test_if_branch_output_count_mismatch_is_invalid_model():
    m = _if_model("input")
    m.graph.node[-1].attribute[0].g.output.append(onnx.ValueInfoProto(name="t0"))
    with pytest.raises(fastlstm.InvalidModel, match="the_if"):
        fastlstm.InferenceSession(m.SerializeToString())


@pytest.mark.parametrize("cond_from", ["input", "sr"])
def test_if_survives_a_fastlstm_file(cond_from):
    from fastlstm import fileformat
    from fastlstm.onnx_import import load_graph
    m = _if_model(cond_from)
    data = fileformat.dumps(load_graph(m.SerializeToString()))
    sess = fastlstm.InferenceSession(data)
    assert "If" in [n.op_type for n in sess._graph.nodes]
    x = R.standard_normal((3, 3)).astype(np.float32)
    for v in (True, False, True):
        feed = {"x": x, "c": np.array(v)} if cond_from == "input" else \
            {"x": x, "sr": np.array(16000 if v else 8000, np.int64)}
        np.testing.assert_allclose(sess.run(None, feed)[0], run_ort(m, feed)[0],
                                   rtol=1e-6, atol=1e-6)
    # a branch node that reads a value nobody defines: refused at load
    from test_reseal_fuzz import _seal, _split
    header, payload = _split(data)
    if_node = [n for n in header["graph"]["nodes"] if n["op_type"] == "If"][0]
    branch = if_node["attrs"]["then_branch"]["subgraph"]
    branch["nodes"][0]["inputs"][0] = "nobody"
    with pytest.raises(fastlstm.InvalidModel, match="nobody"):
        fastlstm.InferenceSession(_seal(header, payload))
