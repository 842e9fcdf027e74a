"""Regenerate the example model bundled with fastlstm (fastlstm/data/example_lstm.onnx).

A bidirectional LSTM (input 64, hidden 128) with a dynamic time and batch axis,
random weights from a fixed seed, written with the onnx helper API (no torch
needed).  Run:  python tools/make_example_model.py
``--op GRU`` or ``--op RNN`` writes the same model with the other op (not
bundled; ``python -m fastlstm demo --model FILE`` runs them).
``--direction forward`` writes the forward model that is also bundled
(fastlstm/data/example_lstm_forward.onnx: a stream needs forward layers):
``python tools/make_example_model.py --direction forward -o fastlstm/data/example_lstm_forward.onnx``.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "fastlstm", "data", "example_lstm.onnx")


def build(op="LSTM", input_size=64, hidden=128, seed=2026, direction="bidirectional"):
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    s = 1.0 / np.sqrt(hidden)
    W = rng.uniform(-s, s, (D, G * hidden, input_size)).astype(np.float32)
    R = rng.uniform(-s, s, (D, G * hidden, hidden)).astype(np.float32)
    B = rng.uniform(-s, s, (D, 2 * G * hidden)).astype(np.float32)
    states = ["initial_h", "initial_c"] if op == "LSTM" else ["initial_h"]
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, ["X", "W", "R", "B", ""] + states, outs, name=op.lower(),
                            hidden_size=hidden, direction=direction)
    state_shape = [D, "batch", hidden]
    graph = helper.make_graph(
        [node], f"example_{op.lower()}" + ("" if D == 2 else f"_{direction}"),
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", "batch", input_size])]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, state_shape) for n in states],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["seq", D, "batch", hidden])]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, state_shape) for n in outs[1:]],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
         numpy_helper.from_array(B, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              producer_name="fastlstm tools/make_example_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=DEFAULT_OUT)
    ap.add_argument("--op", choices=["LSTM", "GRU", "RNN"], default="LSTM")
    ap.add_argument("--direction", choices=["bidirectional", "forward", "reverse"],
                    default="bidirectional")
    args = ap.parse_args()
    onnx.save(build(args.op, direction=args.direction), args.output)
    print(f"wrote {os.path.normpath(args.output)}")


if __name__ == "__main__":
    main()
