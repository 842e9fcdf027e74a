"""Write tests/models/keras_lstm_tf2onnx_pattern.onnx: the graph tf2onnx emits
for a Keras model Input([T, F]) -> LSTM(return_sequences=True) ->
LSTM(return_sequences=False) -> Dense(softmax), built by hand with the onnx
helper API (tensorflow and tf2onnx are not installed here).

The pattern: a Transpose from batch-major to time-major, zero initial states
built from the batch size (Shape -> Gather -> Unsqueeze -> Concat ->
ConstantOfShape), Squeeze of the direction axis of Y and Y_h, a Transpose back,
and the Dense layer as MatMul + Add + Softmax.  Opset 13 (Squeeze axes as an
input).  Run:  python tools/make_keras_pattern_model.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "models", "keras_lstm_tf2onnx_pattern.onnx")
F, U1, U2, C = 8, 12, 10, 4


def main():
    rng = np.random.default_rng(7)
    inits = []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weights(prefix, inp, units):
        s = 1 / np.sqrt(units)
        const(f"{prefix}_W", rng.uniform(-s, s, (1, 4 * units, inp)).astype(np.float32))
        const(f"{prefix}_R", rng.uniform(-s, s, (1, 4 * units, units)).astype(np.float32))
        const(f"{prefix}_B", rng.uniform(-s, s, (1, 8 * units)).astype(np.float32))

    weights("lstm1", F, U1)
    weights("lstm2", U1, U2)
    const("dense_kernel", rng.uniform(-0.5, 0.5, (U2, C)).astype(np.float32))
    const("dense_bias", rng.uniform(-0.1, 0.1, (C,)).astype(np.float32))
    const("zero_i64", np.array(0, np.int64))
    const("one_1d", np.array([1], np.int64))
    const("u1_1d", np.array([U1], np.int64))
    const("u2_1d", np.array([U2], np.int64))
    const("axes0", np.array([0], np.int64))
    const("axes1", np.array([1], np.int64))
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["x_tm"], perm=[1, 0, 2], name="transpose_in"),
        helper.make_node("Shape", ["input_1"], ["shape_in"], name="shape"),
        helper.make_node("Gather", ["shape_in", "zero_i64"], ["batch"], axis=0, name="batch"),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch_1d"], name="batch_1d"),
    ]
    for k, units in ((1, U1), (2, U2)):
        nodes += [
            helper.make_node("Concat", ["one_1d", "batch_1d", f"u{k}_1d"], [f"zshape{k}"],
                             axis=0, name=f"lstm{k}/zeros_shape"),
            helper.make_node("ConstantOfShape", [f"zshape{k}"], [f"zeros{k}"],
                             value=numpy_helper.from_array(np.zeros(1, np.float32)),
                             name=f"lstm{k}/zeros"),
        ]
    nodes += [
        helper.make_node("LSTM", ["x_tm", "lstm1_W", "lstm1_R", "lstm1_B", "", "zeros1",
                                  "zeros1"], ["lstm1_Y"], hidden_size=U1, name="lstm1"),
        helper.make_node("Squeeze", ["lstm1_Y", "axes1"], ["lstm1_seq"], name="lstm1/squeeze"),
        helper.make_node("LSTM", ["lstm1_seq", "lstm2_W", "lstm2_R", "lstm2_B", "", "zeros2",
                                  "zeros2"], ["", "lstm2_Yh"], hidden_size=U2, name="lstm2"),
        helper.make_node("Squeeze", ["lstm2_Yh", "axes0"], ["lstm2_last"],
                         name="lstm2/squeeze"),
        helper.make_node("MatMul", ["lstm2_last", "dense_kernel"], ["dense_mm"], name="dense"),
        helper.make_node("Add", ["dense_mm", "dense_bias"], ["dense_logits"],
                         name="dense/bias"),
        helper.make_node("Softmax", ["dense_logits"], ["dense"], axis=-1, name="dense/softmax"),
    ]
    graph = helper.make_graph(
        nodes, "keras_lstm",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__batch", "unk__time",
                                                                      F])],
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["unk__batch", C])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="fastlstm tools/make_keras_pattern_model.py")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, OUT)
    print(f"wrote {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
