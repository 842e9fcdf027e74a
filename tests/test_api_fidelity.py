"""onnxruntime's API, as code written for onnxruntime uses it (issue 16): the
session's methods and keywords, the inputs it accepts, NaN, and the README's
examples run as written."""
import os
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import InvalidInput, UnsupportedOp

pytestmark = pytest.mark.filterwarnings("ignore")

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _feed(batch=2, T=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"X": rng.standard_normal((T, batch, 64)).astype(np.float32),
            "initial_h": rng.standard_normal((2, batch, 128)).astype(np.float32),
            "initial_c": rng.standard_normal((2, batch, 128)).astype(np.float32)}


def _program(InferenceSession, SessionOptions, path):
    """What a program written for onnxruntime does (the calls of Silero VAD's
    wrapper and of onnxruntime's own examples); returns what it computed."""
    opts = SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    session = InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)
    assert "CPUExecutionProvider" in session.get_providers()
    assert session.get_provider_options()["CPUExecutionProvider"] == {}
    assert session.get_session_options().intra_op_num_threads == 1
    meta = session.get_modelmeta()
    info = (meta.producer_name, meta.graph_name, meta.domain, meta.description, meta.version,
            dict(meta.custom_metadata_map))
    names = [i.name for i in session.get_inputs()]
    outs = [o.name for o in session.get_outputs()]
    feed = _feed()
    ys = session.run(None, {n: feed[n] for n in names})
    y_h, = session.run(output_names=[outs[1]], input_feed={n: feed[n] for n in names},
                       run_options=None)
    return info, names, outs, ys, y_h


def test_an_onnxruntime_program_runs_with_the_class_swapped(tmp_path):
    import onnx
    model = onnx.load(fastlstm.example_model())
    model.doc_string, model.domain, model.model_version = "a model", "ai.example", 7
    model.graph.doc_string = "its graph"
    helper.set_model_props(model, {"author": "tests", "producer_name": "not the producer"})
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    theirs = _program(ort.InferenceSession, ort.SessionOptions, path)
    for options in (fastlstm.SessionOptions, ort.SessionOptions):   # only the class swapped
        ours = _program(fastlstm.InferenceSession, options, path)
        assert ours[:3] == theirs[:3]
        for a, b in zip(ours[3] + [ours[4]], theirs[3] + [theirs[4]]):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    meta = fastlstm.InferenceSession(path).get_modelmeta()
    assert meta.custom_metadata_map == {"author": "tests", "producer_name": "not the producer"}
    assert meta.graph_description == "its graph"
    # the same from a .fastlstm file
    from fastlstm import fileformat
    from fastlstm.onnx_import import load_graph
    packed = str(tmp_path / "m.fastlstm")
    fileformat.save(load_graph(path), packed)
    assert fastlstm.InferenceSession(packed).get_modelmeta() == meta
    # the constructor's keywords are onnxruntime's
    s = fastlstm.InferenceSession(path_or_bytes=path, sess_options=None, providers=None,
                                  provider_options=None)
    assert s.get_overridable_initializers() == []


def _identity_model(elem_type, shape):
    g = helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "g",
                          [helper.make_tensor_value_info("X", elem_type, shape)],
                          [helper.make_tensor_value_info("Y", elem_type, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString()


@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32,
                                       TensorProto.BOOL])
def test_lists_convert_as_onnxruntime_converts_them(elem_type):
    model = _identity_model(elem_type, [2])
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    sess = fastlstm.InferenceSession(model)
    for value in ([1.5, 2], [1, 2], [True, False], [-2.7, 0.0]):
        expected = ref.run(None, {"X": value})[0]
        got = sess.run(None, {"X": value})[0]
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    # arrays of another dtype are refused, as onnxruntime refuses them
    with pytest.raises(InvalidInput, match="dtype"):
        sess.run(None, {"X": np.array([1, 2], np.float64 if elem_type != 11 else np.int8)})
    for bad in (None, "ab", [None, 1], [[1], [1, 2]], {"a": 1}):
        with pytest.raises(InvalidInput, match="'X'"):
            sess.run(None, {"X": bad})


def test_scalars_and_byte_order():
    model = _identity_model(TensorProto.FLOAT, [])
    sess = fastlstm.InferenceSession(model)
    for value in (3, 3.5, True, np.float32(2.5), np.float64(2.5)):
        y = sess.run(None, {"X": value})[0]
        assert y.dtype == np.float32 and y.shape == () and y == np.float32(value)
    # a big-endian array keeps its values (onnxruntime 1.32 reads its bytes as native)
    lstm = fastlstm.InferenceSession(fastlstm.example_model())
    feed = _feed()
    expected = ort.InferenceSession(fastlstm.example_model(),
                                    providers=["CPUExecutionProvider"]).run(None, feed)
    swapped = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in feed.items()}
    as_lists = {k: v.tolist() for k, v in feed.items()}
    for f in (swapped, as_lists, swapped, as_lists):      # (twice: the checked-feed cache)
        for a, b in zip(lstm.run(None, f), expected):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def _reference_lstm(model, feed):
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, feed)


def test_nan_propagates_like_the_onnx_reference():
    """Chosen behaviour: NaN propagates to exactly the outputs that depend on it,
    as onnx.reference computes (onnxruntime gives finite numbers instead)."""
    rng = np.random.default_rng(5)
    H, I = 6, 3
    W = (rng.standard_normal((1, 4 * H, I)) * 0.4).astype(np.float32)
    R = (rng.standard_normal((1, 4 * H, H)) * 0.4).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Y_h", "Y_c"], hidden_size=H)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, [5, 3, I])],
                          [helper.make_tensor_value_info(n, 1, None) for n in ("Y", "Y_h", "Y_c")],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    x = rng.standard_normal((5, 3, I)).astype(np.float32)
    x[2, 1, 0] = np.nan                       # batch row 1 from step 2 on
    got = fastlstm.InferenceSession(model.SerializeToString()).run(None, {"X": x})
    expected = _reference_lstm(model, {"X": x})
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, equal_nan=True)
    y = got[0]
    assert np.isnan(y[2:, 0, 1]).all() and not np.isnan(y[:2]).any()
    assert not np.isnan(y[:, 0, [0, 2]]).any()
    # a NaN weight: every output NaN, as in the reference
    W[0, 0, 0] = np.nan
    inits[0] = numpy_helper.from_array(W, "W")
    del g.initializer[:]
    g.initializer.extend(inits)
    got = fastlstm.InferenceSession(model.SerializeToString()).run(None, {"X": x})
    expected = _reference_lstm(model, {"X": x})
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_stream_state_round_trips():
    sess = fastlstm.InferenceSession(fastlstm.example_model("lstm_forward"))
    rng = np.random.default_rng(2)
    x1, x2 = (rng.standard_normal((T, 1, 64)).astype(np.float32) for T in (4, 3))
    stream = sess.stream()
    stream.run(None, {"X": x1})
    saved = stream.state
    after, = stream.run(["Y"], {"X": x2})
    stream.reset()
    stream.set_state(saved)                    # the whole state, as `state` gives it
    again, = stream.run(["Y"], {"X": x2})
    np.testing.assert_array_equal(after, again)
    # the same as feeding the state to run() (and to onnxruntime)
    (name, st), = saved.items()
    feed = {"X": x2, "initial_h": st["h"], "initial_c": st["c"]}
    np.testing.assert_array_equal(sess.run(["Y"], feed)[0], again)
    ref = ort.InferenceSession(fastlstm.example_model("lstm_forward"),
                               providers=["CPUExecutionProvider"]).run(["Y"], feed)[0]
    np.testing.assert_allclose(again, ref, atol=1e-5, rtol=1e-4)
    # a bad whole state changes nothing
    bad = {name: {"h": st["h"], "c": st["c"][:, :, :5]}}
    before = stream.state
    with pytest.raises(InvalidInput, match="c"):
        stream.set_state(bad)
    np.testing.assert_array_equal(stream.state[name]["h"], before[name]["h"])


def test_stream_refuses_bidirectional_layers_and_says_why():
    sess = fastlstm.InferenceSession(fastlstm.example_model())
    with pytest.raises(UnsupportedOp, match="forward.*chunk by chunk"):
        sess.stream()


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch, capsys):
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    # the snippets name files as a reader in the checkout root would
    (tmp_path / "tests").symlink_to(os.path.join(os.path.dirname(README), "tests"))
    namespace = {"__name__": "readme"}
    for block in blocks:                       # in order, one namespace, as a reader would
        exec(compile(block, README, "exec"), namespace)
    assert namespace["y"].shape == (10, 2, 1, 128)
    assert namespace["outs"][1]["Y_h"].shape == (2, 128)


@pytest.mark.filterwarnings("default")
def test_session_options_given_as_keywords_are_ignored_with_a_warning():
    """onnxruntime ignores unknown keyword arguments; so does fastlstm, but
    one that names a SessionOptions field (a common slip) gets a warning
    naming it, and the session keeps the default."""
    path = os.path.join(os.path.dirname(fastlstm.__file__), "data", "example_lstm.onnx")
    with pytest.warns(UserWarning, match="intra_op_num_threads"):
        s = fastlstm.InferenceSession(path, intra_op_num_threads=2)
    assert s.get_session_options().intra_op_num_threads == 0
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlstm.InferenceSession(path, disabled_optimizers=["x"])     # not an option: silent
