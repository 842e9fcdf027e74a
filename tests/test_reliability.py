"""Reliability and security defects of issue 16: external data, limits, errors
outside the family, the kernel cache folder."""
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import FastLSTMError, InvalidInput, InvalidModel


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
