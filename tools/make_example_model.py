"""Regenerate the example model bundled with fastlstm (fastlstm/data/example_lstm.onnx).

A bidirectional LSTM (input 64, hidden 128) with a dynamic time and batch axis,
random weights from a fixed seed, written with the onnx helper API (no torch
needed).  Run:  python tools/make_example_model.py
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "fastlstm", "data", "example_lstm.onnx")


def build(input_size=64, hidden=128, seed=2026):
    rng = np.random.default_rng(seed)
    D = 2
    s = 1.0 / np.sqrt(hidden)
    W = rng.uniform(-s, s, (D, 4 * hidden, input_size)).astype(np.float32)
    R = rng.uniform(-s, s, (D, 4 * hidden, hidden)).astype(np.float32)
    B = rng.uniform(-s, s, (D, 8 * hidden)).astype(np.float32)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"],
                            ["Y", "Y_h", "Y_c"], name="lstm", hidden_size=hidden,
                            direction="bidirectional")
    graph = helper.make_graph(
        [node], "example_lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", "batch", input_size]),
         helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [D, "batch", hidden]),
         helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [D, "batch", hidden])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["seq", D, "batch", hidden]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [D, "batch", hidden]),
         helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [D, "batch", hidden])],
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
    args = ap.parse_args()
    onnx.save(build(), args.output)
    print(f"wrote {os.path.normpath(args.output)}")


if __name__ == "__main__":
    main()
