"""Bad models and bad inputs raise fastlstm's exceptions with useful messages."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import InvalidInput, InvalidModel, UnsupportedOp
from helpers import feeds, random_weights, recurrent_model


@pytest.fixture(scope="module")
def lstm_model():
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "LSTM", 1, 8, 4)
    arrays["X"] = rng.standard_normal((5, 2, 4)).astype(np.float32)
    arrays["sequence_lens"] = np.array([5, 3], np.int32)
    arrays["initial_h"] = np.zeros((1, 2, 8), np.float32)
    model = recurrent_model("LSTM", arrays, {"hidden_size": 8}, initializers=["W", "R", "B"],
                            symbolic=True)
    return model, feeds(model, arrays)


def test_truncated_file(tmp_path, lstm_model):
    data = lstm_model[0].SerializeToString()
    for cut in (7, len(data) // 2, len(data) - 3):
        p = tmp_path / "m.onnx"
        p.write_bytes(data[:cut])
        with pytest.raises(InvalidModel):
            fastlstm.InferenceSession(str(p))


def test_garbage_and_empty_and_missing(tmp_path):
    with pytest.raises(InvalidModel):
        fastlstm.InferenceSession(b"\x00\x01 definitely not a model")
    with pytest.raises(InvalidModel):
        fastlstm.InferenceSession(b"")
    with pytest.raises(InvalidModel, match="does not exist"):
        fastlstm.InferenceSession(str(tmp_path / "nope.onnx"))
    with pytest.raises(TypeError):
        fastlstm.InferenceSession(12)


def test_unsupported_op_names_op_opset_and_node():
    node = helper.make_node("Det", ["X"], ["Y"], name="det_7")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, [1, 1, 3, 3]),
                                        helper.make_tensor_value_info("W", 1, [1, 1, 1, 1])],
                          [helper.make_tensor_value_info("Y", 1, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOp) as e:
        fastlstm.InferenceSession(m.SerializeToString())
    msg = str(e.value)
    assert "Det" in msg and "det_7" in msg and "13" in msg
    assert e.value.op_type == "Det" and e.value.opset == 13 and e.value.node_name == "det_7"


def test_unsupported_domain():
    node = helper.make_node("LSTM", ["X"], ["Y"], name="custom", domain="com.example")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, [1, 1, 1])],
                          [helper.make_tensor_value_info("Y", 1, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14),
                                            helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOp, match="com.example"):
        fastlstm.InferenceSession(m.SerializeToString())


def _lstm(attrs, dtype=np.float32, opset=14):
    rng = np.random.default_rng(0)
    arrays = {k: v.astype(dtype) for k, v in random_weights(rng, "LSTM", 1, 4, 3).items()}
    arrays["X"] = np.zeros((2, 1, 3), dtype)
    return recurrent_model("LSTM", arrays, attrs, opset=opset, initializers=["W", "R", "B"])


@pytest.mark.parametrize("attrs, exc, match", [
    ({"hidden_size": 4, "direction": "sideways"}, InvalidModel, "direction"),
    ({"hidden_size": 4, "activations": ["Sigmoid", "Tanh"]}, InvalidModel, "activations"),
    ({"hidden_size": 4, "activations": ["Sigmoid", "Tanh", "Swish"]}, UnsupportedOp, "Swish"),
    ({"hidden_size": 4, "clip": -1.0}, InvalidModel, "clip"),
    ({"hidden_size": 5}, InvalidModel, "shape"),
    ({"hidden_size": 4, "input_forget": 2}, InvalidModel, "input_forget"),
    ({"hidden_size": 4, "output_sequence": 1}, UnsupportedOp, "output_sequence"),
    ({"hidden_size": 4, "layout": 2}, InvalidModel, "layout"),
])
def test_bad_attributes(attrs, exc, match):
    with pytest.raises(exc, match=match) as e:
        fastlstm.InferenceSession(_lstm(attrs).SerializeToString())
    assert "lstm_node" in str(e.value)


def test_layout_before_opset_14_is_refused():
    with pytest.raises(UnsupportedOp, match="layout"):
        fastlstm.InferenceSession(_lstm({"hidden_size": 4, "layout": 0}, opset=7)
                                  .SerializeToString())


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_non_float32_models_are_refused(dtype):
    with pytest.raises(UnsupportedOp, match="float32"):
        fastlstm.InferenceSession(_lstm({"hidden_size": 4}, dtype=dtype).SerializeToString())


def test_opset_out_of_range():
    with pytest.raises(UnsupportedOp, match="opset"):
        fastlstm.InferenceSession(_lstm({"hidden_size": 4}, opset=6).SerializeToString())


def test_input_errors(lstm_model):
    model, feed = lstm_model
    s = fastlstm.InferenceSession(model.SerializeToString())
    s.run(None, feed)  # the feed itself is fine

    def bad(match, **changes):
        f = dict(feed)
        for k, v in changes.items():
            if v is None:
                f.pop(k)
            else:
                f[k] = v
        with pytest.raises(InvalidInput, match=match):
            s.run(None, f)

    bad("required input 'X'", X=None)
    bad("dtype float64", X=feed["X"].astype(np.float64))
    bad("rank 2", X=feed["X"][0])
    bad("axis 2", X=np.zeros((5, 2, 3), np.float32))
    bad("dtype int64", sequence_lens=feed["sequence_lens"].astype(np.int64))
    bad(r"\[0, seq_length=5\]", sequence_lens=np.array([6, 1], np.int32))
    bad(r"\[0, seq_length=5\]", sequence_lens=np.array([-1, 1], np.int32))
    bad("initial_h", initial_h=np.zeros((1, 3, 8), np.float32))
    bad("numpy.ndarray", X="not an array")      # (lists are converted, as onnxruntime does)
    with pytest.raises(InvalidInput, match="not an input"):
        s.run(None, dict(feed, Z=feed["X"]))
    with pytest.raises(InvalidInput, match="not an output"):
        s.run(["nope"], feed)
    with pytest.raises(InvalidInput, match="dict"):
        s.run(None, [feed["X"]])


def test_symbolic_dims_must_agree():
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "GRU", 1, 4, 3)
    arrays["X"] = np.zeros((2, 1, 3), np.float32)
    arrays["sequence_lens"] = np.array([2], np.int32)
    node = helper.make_node("GRU", ["X", "W", "R", "B", "sequence_lens"], ["Y"], hidden_size=4)
    inits = [numpy_helper.from_array(arrays[k], k) for k in ("W", "R", "B")]
    g = helper.make_graph([node], "g", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "batch", 3]),
        helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["batch"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    s = fastlstm.InferenceSession(m.SerializeToString())
    with pytest.raises(InvalidInput, match="'batch'"):
        s.run(None, {"X": np.zeros((2, 2, 3), np.float32),
                     "sequence_lens": np.array([2], np.int32)})


def test_runtime_weights_are_checked():
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "RNN", 1, 4, 3)
    arrays["X"] = np.zeros((2, 1, 3), np.float32)
    model = recurrent_model("RNN", arrays, {"hidden_size": 4})
    s = fastlstm.InferenceSession(model.SerializeToString())
    f = feeds(model, arrays)
    with pytest.raises(InvalidInput, match="W"):
        # the model declares W's shape, so change it where the model does not look
        s._plan.runners[0](dict(f, W=np.zeros((1, 4, 2), np.float32)))


def test_nan_propagates():
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "LSTM", 1, 4, 3)
    arrays["X"] = rng.standard_normal((3, 2, 3)).astype(np.float32)
    arrays["X"][1, 0, 0] = np.nan
    model = recurrent_model("LSTM", arrays, {"hidden_size": 4}, initializers=["W", "R", "B"])
    y, yh, yc = fastlstm.InferenceSession(model.SerializeToString()).run(None, feeds(model, arrays))
    assert np.isnan(y[1:, 0, 0]).all() and not np.isnan(y[0]).any()
    assert not np.isnan(y[:, 0, 1]).any() and np.isnan(yh[0, 0]).all()


def test_graph_not_in_topological_order():
    n1 = helper.make_node("Identity", ["a"], ["b"], name="second")
    n2 = helper.make_node("Identity", ["X"], ["a"], name="first")
    g = helper.make_graph([n1, n2], "g", [helper.make_tensor_value_info("X", 1, [1])],
                          [helper.make_tensor_value_info("b", 1, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    with pytest.raises(InvalidModel, match="second"):
        fastlstm.InferenceSession(m.SerializeToString())


def test_mutated_models_fail_cleanly():
    """Random byte mutations of a model either load and run, or raise one of our
    exceptions: never a crash, never another exception type."""
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "LSTM", 2, 5, 3, peepholes=True)
    arrays["X"] = rng.standard_normal((4, 2, 3)).astype(np.float32)
    arrays["sequence_lens"] = np.array([4, 2], np.int32)
    model = recurrent_model("LSTM", arrays, {"hidden_size": 5, "direction": "bidirectional",
                                             "clip": 2.0}, initializers=["W", "R", "B", "P"])
    base = model.SerializeToString()
    feed = feeds(model, arrays)
    outcomes = set()
    for _ in range(400):
        b = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        try:
            s = fastlstm.InferenceSession(bytes(b))
            f = {i.name: feed.get(i.name, np.zeros([d if isinstance(d, int) else 2
                                                    for d in (i.shape or [])], np.float32))
                 for i in s.get_inputs()}
            with np.errstate(all="ignore"):
                s.run(None, f)
            outcomes.add("ran")
        except fastlstm.FastLSTMError as e:
            outcomes.add(type(e).__name__)
    assert "ran" in outcomes and "InvalidModel" in outcomes
