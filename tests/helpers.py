"""Shared helpers for the tests: build one-node models, run onnxruntime."""
import os

import numpy as np
from onnx import TensorProto, helper, numpy_helper

#: Silero VAD (tests/models/silero) and the sample rate it is fed
SILERO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "silero",
                      "silero_vad.onnx")
SR = np.array(16000, np.int64)

SPEC_INPUTS = {
    "LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
    "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
    "RNN": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
}
SPEC_OUTPUTS = {"LSTM": ["Y", "Y_h", "Y_c"], "GRU": ["Y", "Y_h"], "RNN": ["Y", "Y_h"]}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(op, arrays, attrs, opset=14, initializers=(), outputs=None,
                    symbolic=False):
    """A one-node model for ``op``.

    arrays: name -> array for every input that is present (spec names);
    initializers: which of them become initializers (the rest are graph inputs);
    outputs: which spec outputs to expose (default all).
    """
    names = SPEC_INPUTS[op]
    node_inputs = [n if n in arrays else "" for n in names]
    while node_inputs and not node_inputs[-1]:
        node_inputs.pop()
    outs = outputs or SPEC_OUTPUTS[op]
    node_outputs = [o if o in outs else "" for o in SPEC_OUTPUTS[op]]
    while node_outputs and not node_outputs[-1]:
        node_outputs.pop()
    node = helper.make_node(op, node_inputs, node_outputs, name=f"{op.lower()}_node", **attrs)
    g_inputs, inits = [], []
    for n, a in arrays.items():
        if n in initializers:
            inits.append(numpy_helper.from_array(a, n))
        else:
            et = helper.np_dtype_to_tensor_dtype(a.dtype)
            shape = list(a.shape)
            batch_first = attrs.get("layout", 0) == 1
            if symbolic and n == "X":
                shape = ["s0", "s1", a.shape[2]]
            elif symbolic and n in ("initial_h", "initial_c"):
                shape = ["s0", a.shape[1], a.shape[2]] if batch_first else \
                    [a.shape[0], "s1", a.shape[2]]
            g_inputs.append(helper.make_tensor_value_info(n, et, shape))
    g_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = helper.make_graph([node], "g", g_inputs, g_outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def feeds(model, arrays):
    """The arrays of a model's graph inputs."""
    return {i.name: arrays[i.name] for i in model.graph.input}


def run_ort(model, feed, outputs=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(outputs, feed)


def random_weights(rng, op, D, H, I, bias=True, peepholes=False, scale=0.4):
    G = GATES[op]
    out = {"W": (rng.standard_normal((D, G * H, I)) * scale).astype(np.float32),
           "R": (rng.standard_normal((D, G * H, H)) * scale).astype(np.float32)}
    if bias:
        out["B"] = (rng.standard_normal((D, 2 * G * H)) * scale).astype(np.float32)
    if peepholes:
        out["P"] = (rng.standard_normal((D, 3 * H)) * scale).astype(np.float32)
    return out


def random_inputs(rng, op, arrays, x_shape, state_shape):
    """Add a random X and random initial states (initial_c for LSTM) to ``arrays``."""
    arrays["X"] = rng.standard_normal(x_shape).astype(np.float32)
    arrays["initial_h"] = rng.standard_normal(state_shape).astype(np.float32)
    if op == "LSTM":
        arrays["initial_c"] = rng.standard_normal(state_shape).astype(np.float32)
    return arrays


def assert_close(actual, expected, atol=1e-5, rtol=1e-4, label=""):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               atol=atol, rtol=rtol, err_msg=label)


def conv_model(rng, cin, cout, ks, group=1, act=None, scale=0.3, **attrs):
    """One Conv (W scaled by ``scale``, a bias) with an optional activation
    after it ("Clip" with bounds -0.5, 0.8); X's batch and spatial sizes
    free."""
    w = (rng.standard_normal((cout, cin // group, *ks)) * scale).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if act else "y"], group=group,
                              **attrs)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        inits += [numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
                  numpy_helper.from_array(np.array(0.8, np.float32), "hi")]
    elif act:
        nodes.append(helper.make_node(act, ["c"], ["y"]))
    shape = [None, cin] + [None] * len(ks)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
