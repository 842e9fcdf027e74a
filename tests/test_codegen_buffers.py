"""Specialised runs that reuse buffers (fastlstm.codegen's _Scratch) and call
small kernels themselves (dense_into with a folded activation, Concat,
Softmax, computed MatMuls): results equal onnxruntime's on every run, an
output handed to the caller is never written by a later run, and threads
running one session at once each get their own buffers."""
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from helpers import run_ort

R = np.random.default_rng(5)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name=o) for o in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _fin(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _attention(extra_outputs=()):
    """A Luong attention decoder step without its recurrent layer: an
    embedding row, scores against a memory, softmax, context, Concat, a
    dense layer with Tanh, the output Gemm (12 classes: padded columns)."""
    H, T, V = 32, 10, 12
    inits = [("emb", R.standard_normal((V, H)).astype(np.float32)),
             ("wc", R.standard_normal((2 * H, H)).astype(np.float32) * 0.2),
             ("bc", R.standard_normal(H).astype(np.float32)),
             ("wo", R.standard_normal((V, H)).astype(np.float32)),
             ("bo", R.standard_normal(V).astype(np.float32)),
             ("shape", np.array([1, 1, H], np.int64)),
             ("flat", np.array([1, H], np.int64))]
    nodes = [helper.make_node("Gather", ["emb", "tok"], ["e"], axis=0),
             helper.make_node("Reshape", ["e", "shape"], ["e3"]),
             helper.make_node("Add", ["e3", "h"], ["q"]),
             helper.make_node("Transpose", ["mem"], ["memT"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "memT"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
             helper.make_node("MatMul", ["attn", "mem"], ["ctx"]),
             helper.make_node("Concat", ["q", "ctx"], ["cat"], axis=2),
             helper.make_node("MatMul", ["cat", "wc"], ["mm"]),
             helper.make_node("Add", ["mm", "bc"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["comb"]),
             helper.make_node("Reshape", ["comb", "flat"], ["comb2"]),
             helper.make_node("Gemm", ["comb2", "wo", "bo"], ["logits"], transB=1)]
    inputs = [_fin("tok", [1], TensorProto.INT64), _fin("h", [1, 1, H]),
              _fin("mem", [1, T, H])]
    return _model(nodes, inputs, ["logits", *extra_outputs], inits)


def _feed(k):
    r = np.random.default_rng(k)
    return {"tok": np.array([k % 12], np.int64),
            "h": r.standard_normal((1, 1, 32)).astype(np.float32),
            "mem": r.standard_normal((1, 10, 32)).astype(np.float32)}


def _src(sess):
    return next(iter(sess._plan._specialiser._built.values())).source


@pytest.mark.parametrize("extra", [(), ("attn",), ("comb", "cat"), ("comb2",)])
def test_outputs_are_never_a_reused_buffer(extra):
    """Outputs kept from earlier runs keep their values while later runs
    (specialised, reusing buffers) go on; an intermediate that is also an
    output (or a view of one) gets a new array per run."""
    m = _attention(extra)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    kept = []
    for k in range(6):
        feed = _feed(k)
        got = sess.run(None, feed)
        kept.append(([g.copy() for g in got], got))
        want = run_ort(m, feed)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    for copies, got in kept:
        for c, g in zip(copies, got):
            np.testing.assert_array_equal(c, g)
        # no output shares memory with another run's
        for other_copies, other in kept:
            if other is not got:
                for g in got:
                    assert not any(np.shares_memory(g, o) for o in other)
    src = _src(sess)
    assert "getattr(" in src, src           # buffers are reused here


def test_attention_step_is_kernel_calls():
    """The step's computing lines: the embedding take, two products of the
    attention, the softmax, the concat, one dense call with its Tanh and the
    Gemm (no numpy matmul, concatenate, tanh)."""
    m = _attention()
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for k in range(3):
        sess.run(None, _feed(k))
    src = _src(sess)
    for name in ("np.matmul", "np.concatenate", "np.tanh"):
        assert name not in src, src


def test_threads_get_their_own_buffers():
    """Two threads running one session at once, each on its own feeds: every
    result equals onnxruntime's."""
    m = _attention(("cat",))
    sess = fastlstm.InferenceSession(m.SerializeToString())
    feeds = [_feed(k) for k in range(8)]
    want = [run_ort(m, f) for f in feeds]
    for f in feeds[:2]:
        sess.run(None, f)
    errors = []

    def work(offset):
        try:
            for rep in range(200):
                k = (rep + offset) % len(feeds)
                got = sess.run(None, feeds[k])
                for g, w in zip(got, want[k]):
                    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(o,)) for o in (0, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("act", ["Tanh", "Relu", "Sigmoid"])
@pytest.mark.parametrize("n_out", [16, 29])
def test_dense_with_folded_activation(act, n_out):
    """MatMul + bias Add + activation as one dense_into call (29 columns:
    padded to 32, copied out), rows of a 3-D input; NaN passes through."""
    w = R.standard_normal((24, n_out)).astype(np.float32)
    b = R.standard_normal(n_out).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["pre"]),
             helper.make_node(act, ["pre"], ["a"]),
             helper.make_node("Neg", ["a"], ["y"])]
    m = _model(nodes, [_fin("x", [None, 1, 24])], ["y"], [("w", w), ("b", b)])
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for t in (1, 7, 1, 7, 1, 7):
        x = R.standard_normal((t, 1, 24)).astype(np.float32)
        x[0, 0, 3] = np.nan
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, run_ort(m, {"x": x})[0], rtol=1e-5, atol=1e-5)
    assert f"np.{act.lower()}" not in _src(sess)


def test_reduce_view_of_a_kernel_output_escapes():
    """A ReduceMean over axes of one element returns a view of its input:
    the kernel output it views is returned, so it is not a reused buffer."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("ReduceMean", ["s"], ["y"], axes=[1], keepdims=0)]
    m = _model(nodes, [_fin("x", [2, 1, 8])], ["y"], opset=13)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    kept = []
    for k in range(5):
        x = R.standard_normal((2, 1, 8)).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        kept.append((got, got.copy()))
        np.testing.assert_allclose(got, run_ort(m, {"x": x})[0], rtol=1e-6, atol=1e-6)
    for got, c in kept:
        np.testing.assert_array_equal(got, c)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_moves_take_into_buffers(mode):
    """A Pad that moves elements and a Tile of int64 data take by an index
    map into their buffers (a reused one for the Pad, read by a fused loop;
    a new int64 array for the returned Tile)."""
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode),
             helper.make_node("Sigmoid", ["p"], ["s"]),
             helper.make_node("Neg", ["s"], ["y"]),
             helper.make_node("Tile", ["i", "reps"], ["t"])]
    inits = [("pads", np.array([0, 2, 0, 3], np.int64)), ("reps", np.array([2, 3], np.int64))]
    m = _model(nodes, [_fin("x", [2, 7]), _fin("i", [2, 2], TensorProto.INT64)], ["y", "t"],
               inits)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    kept = []
    for k in range(5):
        feed = {"x": R.standard_normal((2, 7)).astype(np.float32),
                "i": R.integers(-9, 9, (2, 2)).astype(np.int64)}
        got = sess.run(None, feed)
        kept.append((got, [g.copy() for g in got]))
        for g, w in zip(got, run_ort(m, feed)):
            assert g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    for got, copies in kept:
        for g, c in zip(got, copies):
            np.testing.assert_array_equal(g, c)
    src = _src(sess)
    assert src.count(".take(") == 2 and "getattr(" in src, src


def test_conv_into_a_reused_buffer_from_a_read_only_feed():
    """A conv whose output is read only by the next op writes a reused
    buffer; with a read-only feed (which the kernels refuse) the runner
    writes that buffer instead."""
    w = R.standard_normal((4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1]),
             helper.make_node("Mul", ["c", "c"], ["y"])]
    m = _model(nodes, [_fin("x", [2, 60])], ["y"],
               [("w", w), ("shape", np.array([2, 3, 20], np.int64))])
    sess = fastlstm.InferenceSession(m.SerializeToString())
    kept = []
    for k in range(6):
        x = R.standard_normal((2, 60)).astype(np.float32)
        if k % 2:
            x.flags.writeable = False
        got = sess.run(None, {"x": x})[0]
        kept.append((got, got.copy()))
        np.testing.assert_allclose(got, run_ort(m, {"x": x})[0], rtol=1e-5, atol=1e-5)
    for got, c in kept:
        np.testing.assert_array_equal(got, c)
    assert "out=" in _src(sess)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("pool_is_output", [False, True])
def test_pool_writes_into_the_runs_buffer(op, pool_is_output):
    """A pool between two ops writes a buffer the run keeps (its bound
    ``into``); as a graph output it is a new array each run, never written
    by a later one; read-only feeds too."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node(op, ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Mul", ["p", "p"], ["y"])]
    outs = ["y", "p"] if pool_is_output else ["y"]
    m = _model(nodes, [_fin("x", [1, 8, 12, 40])], outs)
    sess = fastlstm.InferenceSession(m.SerializeToString())
    kept = []
    for k in range(6):
        x = R.standard_normal((1, 8, 12, 40)).astype(np.float32)
        if k % 3 == 2:
            x.flags.writeable = False
        got = sess.run(None, {"x": x})
        kept.append([(g, g.copy()) for g in got])
        for g, w in zip(got, run_ort(m, {"x": x})):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    for pairs in kept:
        for g, c in pairs:
            np.testing.assert_array_equal(g, c)
    fn = next(iter(sess._plan._specialiser._built.values()))
    assert any(getattr(v, "__name__", "") == "into" for v in fn.__globals__.values())


@pytest.mark.parametrize("cat_is_output", [False, True])
def test_dense_reads_a_joined_input_in_two_parts(cat_is_output):
    """Concat along K feeding only a dense layer: the layer reads both parts
    (dense2_into, rows of a 3-D input); a Concat that is also returned is
    made as before."""
    wa = R.standard_normal((40, 29)).astype(np.float32)
    b = R.standard_normal(29).astype(np.float32)
    nodes = [helper.make_node("Concat", ["p", "q"], ["x"], axis=-1),
             helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["y"])]
    outs = ["y", "x"] if cat_is_output else ["y"]
    m = _model(nodes, [_fin("p", [None, 1, 24]), _fin("q", [None, 1, 16])], outs,
               [("w", wa), ("b", b)])
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for t in (1, 9, 1, 9, 1, 9):
        feed = {"p": R.standard_normal((t, 1, 24)).astype(np.float32),
                "q": R.standard_normal((t, 1, 16)).astype(np.float32)}
        for g, w in zip(sess.run(None, feed), run_ort(m, feed)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    for fn in sess._plan._specialiser._built.values():
        calls = [k for k in fn.__globals__ if fn.__globals__[k] is not None
                 and getattr(fn.__globals__[k], "__name__", "") == "dense2_into"]
        assert bool(calls) != cat_is_output, fn.source


@pytest.mark.parametrize("case", ["matmul", "dense", "joined", "softmax", "concat"])
def test_read_only_feeds(case):
    """Feeds that are read-only arrays go straight into the kernels the
    specialised run calls (each takes read-only inputs too)."""
    w = R.standard_normal((8, 5)).astype(np.float32)
    nodes = {"matmul": [helper.make_node("MatMul", ["x", "y"], ["z"])],
             "dense": [helper.make_node("MatMul", ["x", "w"], ["z"])],
             "joined": [helper.make_node("Concat", ["x", "x"], ["c"], axis=-1),
                        helper.make_node("MatMul", ["c", "w2"], ["z"])],
             "softmax": [helper.make_node("Softmax", ["x"], ["z"], axis=-1)],
             "concat": [helper.make_node("Concat", ["x", "x"], ["z"], axis=0)]}[case]
    m = _model(nodes, [_fin("x", [1, 4, 8]), _fin("y", [1, 8, 5])], ["z"],
               [("w", w), ("w2", np.concatenate([w, w]))])
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(4):
        feed = {"x": R.standard_normal((1, 4, 8)).astype(np.float32),
                "y": R.standard_normal((1, 8, 5)).astype(np.float32)}
        for a in feed.values():
            a.flags.writeable = False
        got = sess.run(None, feed)[0]
        np.testing.assert_allclose(got, run_ort(m, feed)[0], rtol=1e-5, atol=1e-5)
