"""Memory bombs (issue 16): ops that allocate what their input values say are
refused over the size limit, naming the node, before allocating.

The huge cases ask for terabytes, which numpy cannot even reserve (so a
missing check shows up as MemoryError at once, never as a machine that
swaps); the realistic ones lower the limit instead of allocating gigabytes.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import InvalidInput, InvalidModel, limits

HUGE = 10 ** 6          # [HUGE, HUGE] float32 is 4 TB


def _model(nodes, inits, inputs=(), out_type=TensorProto.FLOAT, opset=18):
    g = helper.make_graph(
        nodes, "bomb", [helper.make_tensor_value_info(n, et, s) for n, et, s in inputs],
        [helper.make_tensor_value_info("Y", out_type, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]) \
        .SerializeToString()


def _i64(*v):
    return np.array(v, np.int64)


def _one():
    return np.ones((1, 1), np.float32)


def bombs(a, b):
    """Models whose one node makes a float32 [a, b] (or int64 [a*b]) from tiny constants."""
    return {
        "ConstantOfShape": _model([helper.make_node("ConstantOfShape", ["s"], ["Y"],
                                                    name="bomb")], {"s": _i64(a, b)}),
        "Expand": _model([helper.make_node("Expand", ["x", "s"], ["Y"], name="bomb")],
                         {"x": _one(), "s": _i64(a, b)}),
        "Range": _model([helper.make_node("Range", ["lo", "hi", "d"], ["Y"], name="bomb")],
                        {"lo": np.array(0, np.int64), "hi": np.array(a * b, np.int64),
                         "d": np.array(1, np.int64)}, out_type=TensorProto.INT64),
        "Tile": _model([helper.make_node("Tile", ["x", "r"], ["Y"], name="bomb")],
                       {"x": _one(), "r": _i64(a, b)}),
        "Pad": _model([helper.make_node("Pad", ["x", "p"], ["Y"], name="bomb")],
                      {"x": _one(), "p": _i64(0, 0, a - 1, b - 1)}),
        "Resize": _model([helper.make_node("Resize", ["x", "", "", "sz"], ["Y"], name="bomb",
                                           mode="nearest")],
                         {"x": np.ones((1, 1, 1, 1), np.float32), "sz": _i64(1, 1, a, b)}),
        "Add": _model([helper.make_node("Add", ["u", "v"], ["Y"], name="bomb")],
                      {"u": np.ones((a, 1), np.float32), "v": np.ones((1, b), np.float32)}),
        "MatMul": _model([helper.make_node("MatMul", ["u", "v"], ["Y"], name="bomb")],
                         {"u": np.ones((a, 1), np.float32), "v": np.ones((1, b), np.float32)}),
    }


def _options(max_bytes):
    so = fastlstm.SessionOptions()
    so.max_tensor_bytes = max_bytes
    return so


@pytest.mark.parametrize("op", list(bombs(2, 2)))
def test_folded_bombs_are_refused_before_allocating(op):
    model = bombs(HUGE, HUGE)[op]
    with pytest.raises(InvalidModel, match=r'bomb.*limit'):
        fastlstm.InferenceSession(model)


@pytest.mark.parametrize("op", list(bombs(2, 2)))
def test_the_limit_is_a_session_option(op):
    model = bombs(1000, 600)[op]            # 2.4 MB float32 (4.8 MB as int64)
    with pytest.raises(InvalidModel, match=r'node "bomb".*over the limit of 1\.0 MiB'):
        fastlstm.InferenceSession(model, _options(1 << 20))
    y, = fastlstm.InferenceSession(model, _options(64 << 20)).run(None, {})
    import onnxruntime as ort
    expected, = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {})
    np.testing.assert_array_equal(y, expected)


def test_fed_shapes_are_checked_at_run_time():
    model = _model([helper.make_node("ConstantOfShape", ["s"], ["Y"], name="bomb")], {},
                   inputs=[("s", TensorProto.INT64, [2])])
    sess = fastlstm.InferenceSession(model)
    assert sess.run(None, {"s": _i64(2, 3)})[0].shape == (2, 3)
    with pytest.raises(InvalidInput, match=r'bomb.*limit'):
        sess.run(None, {"s": _i64(HUGE, HUGE)})
    small = fastlstm.InferenceSession(model, _options(1 << 20))
    with pytest.raises(InvalidInput, match=r'bomb.*limit of 1\.0 MiB'):
        small.run(None, {"s": _i64(1000, 600)})


def test_limit_values_are_checked():
    for bad in (0, -1, 1.5, "1G", True):
        with pytest.raises(InvalidInput, match="max_tensor_bytes"):
            fastlstm.InferenceSession(bombs(2, 2)["Tile"], _options(bad))
    assert limits.current_limit() == limits.DEFAULT_MAX_TENSOR_BYTES


def test_loop_scan_outputs_are_checked_as_they_grow():
    """A Loop whose trip count is fed: its stacked scan output is refused once it
    would pass the limit, not after running every iteration."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("ConstantOfShape", ["shp"], ["row"], name="row")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("row", TensorProto.FLOAT, [1000])],
        [numpy_helper.from_array(_i64(1000), "shp")])
    loop = helper.make_node("Loop", ["M", ""], ["Y"], name="bomb", body=body)
    model = _model([loop], {}, inputs=[("M", TensorProto.INT64, [])])
    sess = fastlstm.InferenceSession(model, _options(1 << 20))
    assert sess.run(None, {"M": np.array(10, np.int64)})[0].shape == (10, 1000)
    with pytest.raises(InvalidInput, match=r'bomb.*scan output 0 after 263 iterations'):
        sess.run(None, {"M": np.array(10 ** 12, np.int64)})


def test_recurrent_outputs_are_checked_before_allocating():
    """A long X of input size 1 asks a wide layer for a Y many times its size."""
    from helpers import random_weights, recurrent_model
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "RNN", 2, 64, 1)
    arrays["X"] = np.zeros((1, 1, 1), np.float32)
    model = recurrent_model("RNN", arrays, {"hidden_size": 64, "direction": "bidirectional"},
                            initializers=["W", "R", "B"], symbolic=True).SerializeToString()
    sess = fastlstm.InferenceSession(model, _options(1 << 20))
    assert sess.run(None, {"X": np.zeros((100, 1, 1), np.float32)})[0].shape == (100, 2, 1, 64)
    with pytest.raises(InvalidInput, match=r'rnn_node.*output Y.*limit of 1\.0 MiB'):
        sess.run(None, {"X": np.zeros((4096, 1, 1), np.float32)})    # 16 KB in, 2 MiB out
