"""Reliability and security defects of issue 16: external data, limits, errors
outside the family, the kernel cache folder."""
import os

import numpy as np
import pytest
from onnx import TensorProto, helper

import fastlstm
from fastlstm import InvalidInput, InvalidModel


# --- external data --------------------------------------------------------------

W_VALUE = np.arange(12, dtype=np.float32).reshape(3, 4)


def _external_model(location="weights.bin"):
    """A MatMul model whose weight W [3, 4] is stored externally at ``location``."""
    t = TensorProto()
    t.name = "W"
    t.data_type = TensorProto.FLOAT
    t.dims.extend([3, 4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "48")):
        e = t.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [t])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def _write_model(folder, location="weights.bin", data=W_VALUE):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(_external_model(location).SerializeToString())
    if data is not None:
        (folder / "weights.bin").write_bytes(data.tobytes())
    return path


X = np.arange(6, dtype=np.float32).reshape(2, 3)


def _ort(path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"X": X})[0]


def test_external_data_is_read_beside_the_model(tmp_path, monkeypatch):
    path = _write_model(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a decoy of the same name in the current folder must not be read
    (elsewhere / "weights.bin").write_bytes((W_VALUE * 100).tobytes())
    monkeypatch.chdir(elsewhere)
    expected = _ort(path)
    np.testing.assert_allclose(expected, X @ W_VALUE)
    got = fastlstm.InferenceSession(str(path)).run(None, {"X": X})[0]
    np.testing.assert_array_equal(got, expected)
    # a relative path to the model works too
    monkeypatch.chdir(tmp_path)
    got = fastlstm.InferenceSession(os.path.join("model", "m.onnx")).run(None, {"X": X})[0]
    np.testing.assert_array_equal(got, expected)


def test_external_data_from_bytes_needs_a_folder(tmp_path, monkeypatch):
    path = _write_model(tmp_path / "model")
    monkeypatch.chdir(tmp_path / "model")      # even with the data in the current folder
    data = path.read_bytes()
    with pytest.raises(InvalidModel, match="external_data_dir"):
        fastlstm.InferenceSession(data)
    monkeypatch.chdir(tmp_path)
    so = fastlstm.SessionOptions()
    so.external_data_dir = str(tmp_path / "model")
    got = fastlstm.InferenceSession(data, so).run(None, {"X": X})[0]
    np.testing.assert_array_equal(got, X @ W_VALUE)
    so = fastlstm.SessionOptions()         # onnxruntime's way of saying it
    so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                str(tmp_path / "model"))
    got = fastlstm.InferenceSession(data, sess_options=so).run(None, {"X": X})[0]
    np.testing.assert_array_equal(got, X @ W_VALUE)


def test_external_data_escapes_are_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(W_VALUE.tobytes())
    folder = tmp_path / "model"
    cases = {"dotdot": "../secret.bin", "absolute": str(secret),
             "link_out": "link.bin", "device": "dev.bin", "fifo": "fifo.bin",
             "link_dir": "sub/secret.bin", "missing": "nothing.bin"}
    folder.mkdir()
    os.symlink(secret, folder / "link.bin")
    os.symlink("/dev/zero", folder / "dev.bin")
    os.mkfifo(folder / "fifo.bin")
    os.symlink(tmp_path, folder / "sub")
    for label, location in cases.items():
        path = folder / f"{label}.onnx"
        path.write_bytes(_external_model(location).SerializeToString())
        with pytest.raises(InvalidModel, match="W"):
            fastlstm.InferenceSession(str(path))


# --- the kernel cache -----------------------------------------------------------

def test_kernel_cache_is_outside_the_package():
    """Numba's cache of fastlstm's kernels lives in the per-user cache folder."""
    from fastlstm import config
    from fastlstm.kernels import lstm, registry
    package = os.path.dirname(os.path.abspath(fastlstm.__file__))
    root = config.kernel_cache_dir()
    for fn in (lstm.lstm_step, registry._gemm):
        path = fn._cache._cache_path
        assert os.path.commonpath([path, root]) == root, path
        assert os.path.commonpath([path, package]) != package, path
        assert path == config.numba_cache_path(lstm.__file__)
    assert any(n.endswith(".nbi") for n in os.listdir(config.numba_cache_path(lstm.__file__)))


def test_kernel_cache_dir_from_the_environment(monkeypatch, tmp_path):
    from fastlstm import config
    monkeypatch.delenv("FASTLSTM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.kernel_cache_dir() == str(tmp_path / "xdg" / "fastlstm")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.kernel_cache_dir() == str(tmp_path / "home" / ".cache" / "fastlstm")
    monkeypatch.setenv("FASTLSTM_CACHE_DIR", str(tmp_path / "mine"))
    assert config.kernel_cache_dir() == str(tmp_path / "mine")


def test_cache_locator_leaves_other_code_alone(tmp_path):
    """Functions outside fastlstm keep Numba's own cache placement."""
    src = tmp_path / "user_mod.py"
    src.write_text("from numba import njit\n@njit(cache=True)\ndef f(x):\n    return x + 1\n")
    import importlib.util
    spec = importlib.util.spec_from_file_location("user_mod_for_cache_test", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.f(1) == 2
    assert str(tmp_path) in mod.f._cache._cache_path


# --- errors outside the family --------------------------------------------------

def _lstm_session():
    from helpers import random_weights, recurrent_model
    rng = np.random.default_rng(1)
    arrays = random_weights(rng, "LSTM", 1, 8, 3)
    arrays["X"] = rng.standard_normal((4, 1, 3)).astype(np.float32)
    model = recurrent_model("LSTM", arrays, {"hidden_size": 8}, initializers=["W", "R", "B"])
    return fastlstm.InferenceSession(model.SerializeToString())


def test_bad_environment_variables_are_fastlstm_errors(monkeypatch):
    from fastlstm import config
    for raw, match in (("abc", "FASTLSTM_NUM_THREADS='abc' must be an integer >= 1"),
                       ("0", "must be an integer >= 1"), ("-2", ">= 1")):
        monkeypatch.setenv("FASTLSTM_NUM_THREADS", raw)
        with pytest.raises(InvalidInput, match=match):
            config.default_num_threads()
        with pytest.raises(InvalidInput, match="FASTLSTM_NUM_THREADS"):
            _lstm_session()


def test_micro_batcher_arguments_are_checked():
    sess = _lstm_session()
    for kwargs, match in (({"max_batch": 0}, "max_batch must be an int >= 1"),
                          ({"workers": 0}, "workers must be an int >= 1"),
                          ({"max_batch": 2.5}, "max_batch"),
                          ({"max_wait_us": -1}, "max_wait_us must be a number"),
                          ({"max_wait_us": float("nan")}, "max_wait_us")):
        with pytest.raises(InvalidInput, match=match):
            fastlstm.MicroBatcher(sess, **kwargs)


def test_stream_batch_size_is_checked():
    sess = _lstm_session()
    with pytest.raises(InvalidInput, match="batch_size 1000000000.*limit"):
        sess.stream(batch_size=10 ** 9)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInput, match="batch_size"):
            sess.stream(batch_size=bad)
    assert sess.stream(batch_size=1000).batch_size == 1000
