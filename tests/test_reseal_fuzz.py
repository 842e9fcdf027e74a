"""Re-sealed .fastlstm mutants: contents changed, checksums recomputed.

The checksums only catch damage; a file whose contents were changed and
re-sealed must still be refused at load (``InvalidModel``) when it is
inconsistent, or load and run.  Never a KeyError, TypeError, AttributeError,
a crash or a hang.
"""
import copy
import hashlib
import json
import struct
import traceback

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import FastLSTMError, InvalidModel, fileformat
from fastlstm.onnx_import import load_graph

_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
          "tensor(bool)": np.bool_, "tensor(double)": np.float64}


def _model():
    """Two recurrent layers (a packed bidirectional LSTM with peepholes and a GRU)
    and the glue an exporter writes around them."""
    rng = np.random.default_rng(7)

    def init(name, *shape, dtype=np.float32):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.4).astype(dtype), name)
    H, I, H2 = 5, 6, 4
    inits = [init("W", 2, 4 * H, I), init("R", 2, 4 * H, H), init("B", 2, 8 * H),
             init("P", 2, 3 * H), init("W2", 1, 3 * H2, 2 * H), init("R2", 1, 3 * H2, H2),
             init("Wo", H2, 3), init("bo", 3),
             numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")]
    nodes = [
        helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "", "P"], ["Y", "Y_h"],
                         name="lstm", hidden_size=H, direction="bidirectional", clip=3.0),
        helper.make_node("Transpose", ["Y"], ["Yt"], name="tr", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Yt", "shape"], ["Yr"], name="rs"),
        helper.make_node("GRU", ["Yr", "W2", "R2"], ["Y2", "Y2_h"], name="gru",
                         hidden_size=H2, linear_before_reset=1),
        helper.make_node("Squeeze", ["Y2"], ["Y2s"], name="sq", axes=[1]),
        helper.make_node("MatMul", ["Y2s", "Wo"], ["logits0"], name="mm"),
        helper.make_node("Add", ["logits0", "bo"], ["logits"], name="add"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="sm", axis=-1),
        helper.make_node("Concat", ["Y_h", "Y_h"], ["hh"], name="cat", axis=0),
        # a branch on a fed flag (kept as an If: subgraphs in the file)
        helper.make_node("If", ["flag"], ["sel"], name="iff", then_branch=helper.make_graph(
            [helper.make_node("Identity", ["probs"], ["r1"])], "then", [],
            [helper.make_tensor_value_info("r1", TensorProto.FLOAT, None)]),
            else_branch=helper.make_graph(
            [helper.make_node("Neg", ["probs"], ["r2"])], "else", [],
            [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)])),
    ]
    g = helper.make_graph(
        nodes, "fuzz",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", "batch", I]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, "batch", H]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
         for n in ("probs", "hh", "Y2_h", "sel")], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])


def _split(data):
    hlen = struct.unpack("<I", data[12:16])[0]
    header = json.loads(data[48:48 + hlen])
    start = -(-(48 + hlen) // 64) * 64
    return header, bytearray(data[start:])


def _seal(header, payload):
    header = dict(header, payload_size=len(payload),
                  payload_sha256=hashlib.sha256(payload).hexdigest())
    hb = json.dumps(header, separators=(",", ":")).encode()
    head = (fileformat.MAGIC + struct.pack("<II", fileformat.FORMAT_VERSION, len(hb))
            + hashlib.sha256(hb).digest() + hb)
    return head + b"\0" * (-len(head) % 64) + bytes(payload)


def _paths(node, path=()):
    """Every (path, value) in a JSON tree."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _strings(header):
    return sorted({v for _, v in _paths(header["graph"]) if isinstance(v, str)})


def _mutate(header, payload, rng):
    header = copy.deepcopy(header)
    payload = bytearray(payload)
    kind = rng.random()
    if kind < 0.15:            # payload bytes (weights, kernel parameters)
        for _ in range(int(rng.integers(1, 4))):
            payload[int(rng.integers(0, len(payload)))] = int(rng.integers(0, 256))
        return header, payload
    # the graph and the array table (not the seal fields themselves)
    targets = [(p, v) for p, v in _paths(header)
               if p and p[0] in ("graph", "arrays", "metadata")]
    path, value = targets[int(rng.integers(0, len(targets)))]
    parent = header
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    names = _strings(header)
    pool = [0, 1, -1, 2, 3, 7, 10 ** 9, -10 ** 12, 0.5, -2.5, "", "X", "Y", None, True, False,
            [], [1], [0, 0], {}, {"array": 0}, {"array": 10 ** 6}, "tensor(float)", "LSTM",
            names[int(rng.integers(0, len(names)))], [names[int(rng.integers(0, len(names)))]]]
    op = rng.random()
    if op < 0.12 and isinstance(parent, dict):
        del parent[key]
    elif op < 0.2 and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(value))
    elif op < 0.28 and isinstance(parent, list) and len(parent) > 1:
        j = int(rng.integers(0, len(parent)))
        parent[key], parent[j] = parent[j], parent[key]
    elif op < 0.36 and isinstance(parent, list):
        del parent[key]
    elif op < 0.5 and isinstance(value, int) and not isinstance(value, bool):
        parent[key] = value + int(rng.choice([-1, 1, 16, -16]))
    elif op < 0.62 and isinstance(value, str):
        parent[key] = names[int(rng.integers(0, len(names)))]
    else:
        parent[key] = copy.deepcopy(pool[int(rng.integers(0, len(pool)))])
    return header, payload


def _feed(sess, rng):
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and 0 <= d < 64 else 3 for d in (i.shape or [])]
        dt = _TYPES.get(i.type, np.float32)
        feed[i.name] = rng.standard_normal(shape).astype(dt)
    return feed


def _outcome(data, rng):
    """'loaded', 'ran', or the name of the FastLSTMError; raises anything else."""
    try:
        sess = fastlstm.InferenceSession(data)
    except FastLSTMError as e:
        return type(e).__name__
    try:
        with np.errstate(all="ignore"):
            outs = sess.run(None, _feed(sess, rng))
    except FastLSTMError as e:
        return "run:" + type(e).__name__
    assert len(outs) == len(sess.get_outputs())
    return "ran"


@pytest.fixture(scope="module")
def sealed():
    model = _model()
    data = fileformat.dumps(load_graph(model.SerializeToString()))
    return model, data


def test_base_file_runs_like_onnxruntime(sealed):
    """The unmutated file is correct (so a mutant that runs starts from a good file)."""
    import onnxruntime as ort
    model, data = sealed
    header, payload = _split(data)
    assert _seal(header, payload) == data       # the re-sealing itself changes nothing
    rng = np.random.default_rng(0)
    feed = {"X": rng.standard_normal((4, 2, 6)).astype(np.float32),
            "h0": rng.standard_normal((2, 2, 5)).astype(np.float32)}
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = fastlstm.InferenceSession(data)
    for flag in (True, False):
        feed["flag"] = np.array(flag)
        for a, b in zip(sess.run(None, feed), ref.run(None, feed)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_resealed_mutants_fail_cleanly(sealed):
    _, data = sealed
    header, payload = _split(data)
    rng = np.random.default_rng(2026)
    outcomes = {}
    escapes = []
    for k in range(400):
        h, p = _mutate(header, payload, rng)
        try:
            got = _outcome(_seal(h, p), rng)
        except Exception as e:          # noqa: BLE001 - that is what we look for
            tb = traceback.extract_tb(e.__traceback__)[-1]
            escapes.append(f"mutant {k}: {type(e).__name__}: {e} "
                           f"({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})")
            continue
        outcomes[got] = outcomes.get(got, 0) + 1
    assert not escapes, f"{len(escapes)} escapes, {outcomes}:\n" + "\n".join(escapes[:25])
    # inconsistent files are refused at load, not at run time
    assert outcomes.get("InvalidModel", 0) > 100 and "ran" in outcomes, outcomes
    late = {k: v for k, v in outcomes.items() if k.startswith("run:")}
    assert sum(late.values()) <= 0.02 * 400, outcomes
    print(outcomes)


def test_specific_inconsistencies_are_invalid_model(sealed):
    """The cases the issue names, each refused at load."""
    _, data = sealed
    header, payload = _split(data)
    nodes = header["graph"]["nodes"]
    by_name = {n["name"]: i for i, n in enumerate(nodes)}

    def refused(mutate, match):
        h = copy.deepcopy(header)
        mutate(h["graph"])
        with pytest.raises(InvalidModel, match=match):
            fastlstm.InferenceSession(_seal(h, payload))

    mm = by_name["mm"]
    # a node input nobody produces
    refused(lambda g: g["nodes"][mm]["inputs"].__setitem__(0, "nobody"), "nobody")
    # a cycle: the first node reads what the last writes
    refused(lambda g: g["nodes"][0]["inputs"].__setitem__(0, g["nodes"][-1]["outputs"][0]),
            "order|cycle|produce")
    # nodes out of order
    refused(lambda g: g["nodes"].reverse(), "order|produce")
    # a graph output nobody produces
    refused(lambda g: g["outputs"][0].__setitem__("name", "ghost"), "ghost")
    # two producers of one value
    refused(lambda g: g["nodes"][by_name["add"]]["outputs"].__setitem__(0, "logits0"),
            "logits0")
    # wrong attribute types
    refused(lambda g: g["nodes"][by_name["sm"]]["attrs"].__setitem__("axis", "last"), "axis")
    refused(lambda g: g["nodes"][by_name["cat"]]["attrs"].__setitem__("axis", [0]), "axis")
    refused(lambda g: g["nodes"][by_name["sq"]]["attrs"].__setitem__("axes", 1), "axes")
    # an attribute the op does not have, an op fastlstm does not know
    refused(lambda g: g["nodes"][by_name["sm"]]["attrs"].__setitem__("bogus", 1), "bogus")
    refused(lambda g: g["nodes"][mm].__setitem__("op_type", "Frobnicate"), "Frobnicate")
    # a recurrent layer whose spec contradicts its packed weights
    refused(lambda g: g["nodes"][by_name["lstm"]]["layer"]["spec"]
            .__setitem__("direction", "forward"), "lstm")
    refused(lambda g: g["nodes"][by_name["lstm"]]["layer"]["spec"]
            .__setitem__("layout", "0"), "layout")


def test_attribute_kinds_match_the_onnx_schemas():
    """fileformat.ATTR_KINDS (used at load, without onnx) gives every attribute
    the op table accepts its type in the ONNX schemas."""
    import onnx.defs
    from fastlstm.ops.table import OPS
    onnx_kind = {"INT": "int", "FLOAT": "float", "INTS": "ints", "FLOATS": "floats",
                 "STRING": "string", "TENSOR": "tensor", "GRAPH": "graph"}
    for name, decl in OPS.items():
        for form in decl.forms:
            for v in range(form.since, 26):
                try:
                    schema = onnx.defs.get_schema(name, v, "")
                except onnx.defs.SchemaError:
                    continue
                for key, a in schema.attributes.items():
                    if key in form.attrs:
                        want = onnx_kind[str(a.type).rsplit(".", 1)[-1]]
                        got = fileformat.ATTR_KINDS_BY_OP.get(
                            (name, key), fileformat.ATTR_KINDS.get(key))
                        assert got == want, (name, v, key, want)


def test_required_attributes_match_the_onnx_schemas():
    """fileformat.REQUIRED_ATTRS holds every attribute ONNX requires of the forms
    the op table declares."""
    import onnx.defs
    from fastlstm.ops.table import OPS
    for name, decl in OPS.items():
        for form in decl.forms:
            for v in range(form.since, 26):
                try:
                    schema = onnx.defs.get_schema(name, v, "")
                except onnx.defs.SchemaError:
                    continue
                for key, a in schema.attributes.items():
                    if a.required and key in form.attrs:
                        assert key in fileformat.REQUIRED_ATTRS.get(name, ()), (name, v, key)
