"""Property test: any recurrent node fastlstm accepts computes what onnxruntime
computes, over attributes x shapes x layouts x optional inputs x thread counts.

onnxruntime refuses ``layout=1``; for it the oracle is onnxruntime on the same
node with layout 0 and X, the states and the outputs transposed, which is how
the ONNX spec defines layout 1.  Hypothesis draws a bounded number of cases,
derandomized so that CI runs the same ones every time.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastlstm  # noqa: E402
from helpers import run_ort  # noqa: E402

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
N_ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}
# continuous activations (a discontinuous one, ThresholdedRelu, flips on rounding)
ACTS = ["Sigmoid", "Tanh", "Relu", "HardSigmoid", "Softsign", "Softplus", "Elu", "LeakyRelu",
        "Affine", "ScaledTanh"]


@st.composite
def cases(draw):
    op = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    direction = draw(st.sampled_from(["forward", "reverse", "bidirectional"]))
    D = 2 if direction == "bidirectional" else 1
    c = {"op": op, "direction": direction, "D": D,
         "H": draw(st.integers(1, 40)), "I": draw(st.integers(1, 12)),
         "T": draw(st.integers(1, 6)), "B": draw(st.integers(1, 4)),
         "layout": draw(st.sampled_from([0, 1])),
         "clip": draw(st.one_of(st.none(), st.floats(0.5, 4.0))),
         "acts": (draw(st.lists(st.sampled_from(ACTS), min_size=N_ACTS[op] * D,
                                max_size=N_ACTS[op] * D)) if draw(st.booleans()) else None),
         "flag": draw(st.sampled_from([0, 1])) if op != "RNN" else 0,
         "bias": draw(st.booleans()), "seq_lens": draw(st.booleans()),
         "h0": draw(st.booleans()), "c0": op == "LSTM" and draw(st.booleans()),
         "peep": op == "LSTM" and draw(st.booleans()),
         "weights_are_inputs": draw(st.booleans()),
         "threads": draw(st.sampled_from([1, 2])),
         "seed": draw(st.integers(0, 2 ** 31 - 1))}
    return c


def _model(c, layout):
    rng = np.random.default_rng(c["seed"])
    op, D, H, I, T, B = c["op"], c["D"], c["H"], c["I"], c["T"], c["B"]
    G = GATES[op]
    arr = {"W": rng.standard_normal((D, G * H, I)) * 0.3,
           "R": rng.standard_normal((D, G * H, H)) * 0.3}
    if c["bias"]:
        arr["B"] = rng.standard_normal((D, 2 * G * H)) * 0.3
    if c["peep"]:
        arr["P"] = rng.standard_normal((D, 3 * H)) * 0.3
    x = rng.standard_normal((T, B, I))
    arr["X"] = x if layout == 0 else x.transpose(1, 0, 2)
    if c["seq_lens"]:
        arr["sequence_lens"] = rng.integers(0, T + 1, B).astype(np.int32)
    for name, present in (("initial_h", c["h0"]), ("initial_c", c["c0"])):
        if present:
            s = rng.standard_normal((D, B, H))
            arr[name] = s if layout == 0 else s.transpose(1, 0, 2)
    arr = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arr.items()}
    spec_inputs = {"LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
                   "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
                   "RNN": ["X", "W", "R", "B", "sequence_lens", "initial_h"]}[op]
    ins = [n if n in arr else "" for n in spec_inputs]
    while not ins[-1]:
        ins.pop()
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    attrs = {"hidden_size": H, "direction": c["direction"]}
    if layout:
        attrs["layout"] = 1
    if c["clip"] is not None:
        attrs["clip"] = float(c["clip"])
    if c["acts"]:
        attrs["activations"] = c["acts"]
    if op == "LSTM":
        attrs["input_forget"] = c["flag"]
    if op == "GRU":
        attrs["linear_before_reset"] = c["flag"]
    node = helper.make_node(op, ins, outs, name="rec", **attrs)
    weights = ("W", "R", "B", "P")
    inits = [] if c["weights_are_inputs"] else [numpy_helper.from_array(arr[n], n)
                                                for n in weights if n in arr]
    graph_inputs = [helper.make_tensor_value_info(
        n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
        for n, a in arr.items() if c["weights_are_inputs"] or n not in weights]
    g = helper.make_graph([node], "g", graph_inputs,
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in outs], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    feed = {i.name: arr[i.name] for i in g.input}
    return model, feed


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_recurrent_node_matches_onnxruntime(c):
    model, feed = _model(c, c["layout"])
    so = fastlstm.SessionOptions()
    so.intra_op_num_threads = c["threads"]
    got = fastlstm.InferenceSession(model.SerializeToString(), so).run(None, feed)
    ref_model, ref_feed = _model(c, 0)
    expected = run_ort(ref_model, ref_feed)
    if c["layout"] == 1:        # Y [T, D, B, H] -> [B, T, D, H]; Y_h/Y_c [D, B, H] -> [B, D, H]
        expected = [expected[0].transpose(2, 0, 1, 3)] + [e.transpose(1, 0, 2)
                                                         for e in expected[1:]]
    assert len(got) == len(expected)
    for name, a, b in zip(("Y", "Y_h", "Y_c"), got, expected):
        assert a.shape == b.shape, (name, c)
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=f"{name} {c}")
