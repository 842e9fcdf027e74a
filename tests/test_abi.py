"""What Python, the Cython front end and the Numba kernels pass each other is
defined once (``kernels.common``: the parameter blocks as numpy dtypes), checked
when fastlstm is imported, and recorded in every ``.fastlstm`` file."""
import hashlib
import json
import struct

import numpy as np
import pytest

import fastlstm
from fastlstm import ExtensionNotBuilt, InvalidModel, fileformat
from fastlstm._extension import _check_abi, frontend
from fastlstm.kernels import common
from fastlstm.onnx_import import load_graph
from helpers import random_inputs, random_weights, recurrent_model


def test_front_end_struct_matches_the_kernels_dtype():
    offsets, size = frontend.ip_layout()
    assert list(offsets) == list(common.IP_RUN_DTYPE.names)
    assert offsets == {n: common.IP_RUN_DTYPE.fields[n][1] for n in common.IP_RUN_DTYPE.names}
    assert size == common.IP_RUN_DTYPE.itemsize
    # the slot numbers the kernels use are the dtype's fields
    assert common.IP_ORDER == common.IP_LEN == len(common.IP_DTYPE.names)
    assert [common.FP_CLIP, common.FP_BETA2] == [0, common.FP_LEN - 1]


def test_a_stale_front_end_is_refused(monkeypatch):
    """Had the kernels' block changed without a rebuild, import would stop."""
    other = np.dtype([("h", np.int64), ("extra", np.int64)] +
                     [(n, np.int64) for n in common.IP_RUN_DTYPE.names[1:]])
    monkeypatch.setattr(common, "IP_RUN_DTYPE", other)
    with pytest.raises(ExtensionNotBuilt, match="rebuild"):
        _check_abi()


def test_layer_run_takes_its_options_by_name():
    model, arrays = _model()
    sess = fastlstm.InferenceSession(model.SerializeToString())
    (node, runner), = [(n, r) for n, r in sess.plan_runners() if n.layer is not None]
    layer = runner.frontend_layer()
    x = arrays["X"]
    with pytest.raises(TypeError):
        layer.run(x, 0, None, None, None, True, True, True)
    y, yh, yc = layer.run(x, want_yc=False)
    assert yc is None and y.shape == (x.shape[0], 1, x.shape[1], 6)


def _model():
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "LSTM", 1, 6, 3, peepholes=True)
    random_inputs(rng, "LSTM", arrays, (4, 2, 3), (1, 2, 6))
    model = recurrent_model("LSTM", arrays, {"hidden_size": 6, "input_forget": 1},
                            initializers=["W", "R", "B", "P"])
    return model, arrays


def _split(data):
    version, hlen = struct.unpack("<II", data[8:16])
    header = json.loads(data[48:48 + hlen])
    start = -(-(48 + hlen) // 64) * 64
    return version, header, data[start:]


def _seal(version, header, payload):
    hb = json.dumps(header).encode()
    head = fileformat.MAGIC + struct.pack("<II", version, len(hb)) + \
        hashlib.sha256(hb).digest() + hb
    return head + b"\0" * (-len(head) % 64) + payload


def test_file_records_the_kernel_abi_and_other_kernels_refuse_it():
    model, arrays = _model()
    data = fileformat.dumps(load_graph(model.SerializeToString()))
    version, header, payload = _split(data)
    assert version == fileformat.FORMAT_VERSION and header["kernel_abi"] == common.abi()
    header["kernel_abi"]["ip"] = header["kernel_abi"]["ip"][::-1]
    with pytest.raises(InvalidModel, match="other kernels"):
        fastlstm.InferenceSession(_seal(version, header, payload))


def test_files_of_format_1_and_2_still_load():
    """Version 2 had no kernel_abi (its kernels' is today's); version 1 kept the
    layer in node attributes with one "flag" for the op's own flag."""
    model, arrays = _model()
    feed = {k: v for k, v in arrays.items() if k in ("X", "initial_h", "initial_c")}
    expected = fastlstm.InferenceSession(model.SerializeToString()).run(None, feed)
    _, header, payload = _split(fileformat.dumps(load_graph(model.SerializeToString())))
    del header["kernel_abi"]
    header["format_version"] = 2
    v2 = _seal(2, header, payload)
    for n in header["graph"]["nodes"]:
        layer = n.pop("layer", None)
        if layer is not None:
            spec = dict(layer["spec"])
            spec["flag"] = spec.pop("input_forget")
            spec.pop("linear_before_reset")
            n["attrs"] = {"spec": {"recurrent_spec": spec}, "y_tbdh": layer["y_tbdh"],
                          "packed": {"packed_layer": layer["packed"]}}
    header["format_version"] = 1
    v1 = _seal(1, header, payload)
    for data in (v1, v2):
        sess = fastlstm.InferenceSession(data)
        assert sess.recurrent_layers()[0].layer.spec.input_forget == 1
        for g, e in zip(sess.run(None, feed), expected):
            np.testing.assert_array_equal(g, e)
