"""The .fastlstm file: round trips, loading without onnx, and damaged files."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import InvalidModel, fileformat
from fastlstm.onnx_import import load_graph
from helpers import feeds, random_weights, recurrent_model


def _case(op, direction="bidirectional", **attrs):
    rng = np.random.default_rng(len(op))
    D = 2 if direction == "bidirectional" else 1
    arrays = random_weights(rng, op, D, 37, 6, peepholes=(op == "LSTM"), scale=0.3)
    arrays["X"] = rng.standard_normal((9, 3, 6)).astype(np.float32)
    arrays["sequence_lens"] = np.array([9, 4, 0], np.int32)
    arrays["initial_h"] = rng.standard_normal((D, 3, 37)).astype(np.float32)
    model = recurrent_model(op, arrays, dict(hidden_size=37, direction=direction, **attrs),
                            initializers=["W", "R", "B", "P"])
    return model, feeds(model, arrays)


CASES = {"LSTM": {"clip": 2.0, "input_forget": 1}, "GRU": {"linear_before_reset": 1},
         "RNN": {"activations": ["Relu", "Tanh"], "clip": 3.0}}


@pytest.mark.parametrize("op", list(CASES))
def test_round_trip_is_bitwise(op, tmp_path):
    model, feed = _case(op, **CASES[op])
    onnx_bytes = model.SerializeToString()
    path = tmp_path / "m.fastlstm"
    fileformat.save(load_graph(onnx_bytes), path)
    a = fastlstm.InferenceSession(onnx_bytes).run(None, feed)
    for source in (str(path), path.read_bytes()):
        b = fastlstm.InferenceSession(source).run(None, feed)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    s = fastlstm.InferenceSession(str(path))
    assert [i.name for i in s.get_inputs()] == [i.name for i in
                                                fastlstm.InferenceSession(onnx_bytes).get_inputs()]


def test_loads_and_runs_without_onnx(tmp_path):
    model, feed = _case("LSTM")
    path = tmp_path / "m.fastlstm"
    fileformat.save(load_graph(model.SerializeToString()), path)
    np.savez(tmp_path / "feed.npz", **feed)
    expected = fastlstm.InferenceSession(str(path)).run(None, feed)
    np.save(tmp_path / "expected.npy", expected[0])
    code = f"""
import sys
sys.modules["onnx"] = None          # any 'import onnx' now fails
import numpy as np, fastlstm
feed = dict(np.load(r"{tmp_path / 'feed.npz'}"))
y = fastlstm.InferenceSession(r"{path}").run(None, feed)[0]
assert np.array_equal(y, np.load(r"{tmp_path / 'expected.npy'}"))
try:
    import onnx
except ImportError:
    print("ok without onnx")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ok without onnx" in out.stdout


@pytest.fixture()
def packed(tmp_path):
    model, _ = _case("GRU")
    return fileformat.dumps(load_graph(model.SerializeToString()))


def test_damaged_files(packed, tmp_path):
    cases = {
        "truncated": packed[:-10],
        "truncated header": packed[:40],
        "wrong magic": b"FASTLSTX" + packed[8:],
        "flipped payload byte": packed[:-5] + bytes([packed[-5] ^ 0xFF]) + packed[-4:],
        "empty": b"",
    }
    for label, data in cases.items():
        p = tmp_path / f"{label}.fastlstm"
        p.write_bytes(data)
        with pytest.raises(InvalidModel):
            fastlstm.InferenceSession(str(p))


def test_newer_version_is_refused(packed):
    newer = packed[:8] + struct.pack("<I", fileformat.FORMAT_VERSION + 1) + packed[12:]
    with pytest.raises(InvalidModel, match="format version"):
        fastlstm.InferenceSession(newer)


def test_corrupt_header(packed):
    hlen = struct.unpack("<I", packed[12:16])[0]
    text = packed[48:48 + hlen]
    # a header that still parses but lies about the hidden size
    lying = text.replace(b'"hidden":37', b'"hidden":99')
    assert lying != text
    for bad in (packed[:48] + b"[" + packed[49:], packed[:48] + lying + packed[48 + hlen:]):
        with pytest.raises(InvalidModel, match="header"):
            fastlstm.InferenceSession(bad)


def test_no_pickle_in_the_package():
    # the forbidden strings are assembled so that this file does not contain them
    banned = ["import " + "pickle", "allow_" + "pickle=True"]
    root = os.path.dirname(fastlstm.__file__)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith((".py", ".pyx")):
                text = open(os.path.join(dirpath, f)).read()
                assert not any(b in text for b in banned), f


def test_consistent_but_wrong_sizes_are_refused():
    """A file whose checksums are right but whose packed sizes lie (a crafted or
    buggy writer) must not reach the kernels."""
    from fastlstm.pack import pack_graph
    model, _ = _case("LSTM")
    g = pack_graph(load_graph(model.SerializeToString()))
    g.nodes[0].layer.packed.hidden = 99
    with pytest.raises(InvalidModel, match="packed weights"):
        fastlstm.InferenceSession(fileformat.dumps(g))
