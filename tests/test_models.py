"""Whole exported models (tests/models, made by tools/make_torch_models.py and
tools/make_keras_pattern_model.py) against onnxruntime, at several batch sizes
and sequence lengths, and through the .fastlstm file."""
import glob
import os

import numpy as np
import pytest

import fastlstm
from fastlstm import fileformat
from fastlstm.onnx_import import load_graph
from helpers import assert_close

MODELS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "models", "*.onnx")))


DIMS = {"batch": "B", "seq": "T", "unk__batch": "B", "unk__time": "T"}


def _feed(sess, B, T, seed):
    rng = np.random.default_rng(seed)
    sizes = {"B": B, "T": T}
    feed = {}
    for vi in sess.get_inputs():
        shape = [d if isinstance(d, int) else sizes[DIMS[d]] for d in vi.shape]
        if vi.name == "lengths":
            lens = rng.integers(1, T + 1, B)
            lens[0] = T
            feed[vi.name] = lens.astype(np.int64)
        elif vi.type == "tensor(int64)":
            feed[vi.name] = rng.integers(0, 30, shape).astype(np.int64)
        else:
            feed[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


@pytest.mark.parametrize("B,T", [(1, 1), (3, 9), (8, 4)])
@pytest.mark.parametrize("path", MODELS, ids=[os.path.basename(p)[:-5] for p in MODELS])
def test_model_matches_onnxruntime(path, B, T):
    import onnxruntime as ort
    sess = fastlstm.InferenceSession(path)
    feed = _feed(sess, B, T, seed=B * 31 + T)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    got = sess.run(None, feed)
    exp = ref.run(None, feed)
    assert len(got) == len(exp)
    for g, e, o in zip(got, exp, sess.get_outputs()):
        assert g.shape == e.shape, o.name
        assert g.dtype == e.dtype, o.name
        assert_close(g, e, label=f"{os.path.basename(path)} {o.name} B={B} T={T}")


@pytest.mark.parametrize("path", MODELS[:3], ids=[os.path.basename(p)[:-5] for p in MODELS[:3]])
def test_whole_model_round_trip(path, tmp_path):
    sess = fastlstm.InferenceSession(path)
    feed = _feed(sess, 2, 5, seed=1)
    out = tmp_path / "m.fastlstm"
    fileformat.save(load_graph(path), out)
    a = sess.run(None, feed)
    b = fastlstm.InferenceSession(str(out)).run(None, feed)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_shape_subgraphs_are_gone():
    """The zero-state shape sub-graphs and the transposes after bidirectional
    layers are removed at import."""
    path = [p for p in MODELS if "lstm_2layer_bidir_opset17" in p][0]
    ops = [n.op_type for n in fastlstm.InferenceSession(path)._graph.nodes]
    assert "ConstantOfShape" not in ops and "Shape" not in ops and "Transpose" not in ops
    keras = [p for p in MODELS if "keras" in p][0]
    ops = [n.op_type for n in fastlstm.InferenceSession(keras)._graph.nodes]
    assert "ConstantOfShape" not in ops and "Shape" not in ops


def test_shape_cache_follows_changing_shapes():
    """Shape sub-graphs are cached per input shapes; a new shape recomputes them."""
    import onnxruntime as ort
    path = [p for p in MODELS if "dynamo" in p][0]
    sess = fastlstm.InferenceSession(path)
    assert sess._plan._shape_only, "the dynamo export has shape arithmetic to cache"
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for B, T in [(2, 3), (2, 3), (4, 7), (2, 3), (1, 1)]:
        feed = _feed(sess, B, T, seed=B + T)
        for g, e in zip(sess.run(None, feed), ref.run(None, feed)):
            assert_close(g, e)
