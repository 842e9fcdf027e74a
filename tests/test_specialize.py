"""Specialised runs (fastlstm.specialize, codegen, fuse): the second run of a
signature takes a generated function; its results must equal onnxruntime's
exactly as the general path's do."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from helpers import run_ort

R = np.random.default_rng(11)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name=o) for o in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _fin(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _check(m, feeds, rtol=1e-6, atol=1e-6, runs=3):
    sess = fastlstm.InferenceSession(m.SerializeToString())
    for _ in range(runs):       # first run general, second builds, third is specialised
        for feed in feeds:
            want = run_ort(m, feed)
            got = sess.run(None, feed)
            for g, w in zip(got, want):
                assert g.shape == w.shape and g.dtype == w.dtype
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    assert sess._plan._specialiser is not None and sess._plan._specialiser._built
    return sess


def _steps(fn):
    """The lines of a generated run that compute (not feed reads, buffer
    allocations, the unpacking of reused buffers, views or the return)."""
    out = []
    for line in fn.source.splitlines()[1:]:
        t = line.strip()
        if t.startswith("return") or "feed[" in t or "np.empty(" in t or "getattr(" in t:
            continue
        if " = " in t and t.split(" = ", 1)[1].split("(")[0].endswith(".reshape"):
            continue
        out.append(t)
    return out


def _add_chain(n, width):
    """x + c0 + c1 + ... (n Add nodes, constants [1, width])."""
    nodes, inits, prev = [], [], "x"
    for k in range(n):
        inits.append((f"c{k}", R.standard_normal((1, width)).astype(np.float32)))
        nodes.append(helper.make_node("Add", [prev, f"c{k}"], [f"y{k}"]))
        prev = f"y{k}"
    return _model(nodes, [_fin("x", [1, width])], [prev], inits)


def test_add_chain_is_one_fused_loop():
    m = _add_chain(50, 128)
    sess = _check(m, [{"x": R.standard_normal((1, 128)).astype(np.float32)}], rtol=0, atol=0)
    fn = next(iter(sess._plan._specialiser._built.values()))
    src = fn.source
    assert src.count("\n") < 8, src        # one allocation and one call


@pytest.mark.parametrize("shape", [(4, 128), (3, 1, 7)])
def test_mixed_chain_with_broadcast_constants(shape):
    last = shape[-1]
    inits = [("row", R.standard_normal((last,)).astype(np.float32)),
             ("two", np.array(2.0, np.float32)), ("half", np.array(0.5, np.float32)),
             ("lo", np.array(-0.3, np.float32))]
    nodes = [helper.make_node("Mul", ["x", "row"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["b"]),
             helper.make_node("Pow", ["x", "two"], ["p"]),
             helper.make_node("Add", ["b", "p"], ["c"]),
             helper.make_node("Sqrt", ["c"], ["d"]),
             helper.make_node("LeakyRelu", ["x"], ["e"], alpha=0.2),
             helper.make_node("HardSigmoid", ["e"], ["f"]),
             helper.make_node("Sub", ["d", "f"], ["g"]),
             helper.make_node("Div", ["g", "half"], ["h"]),
             helper.make_node("Max", ["h", "lo"], ["i"]),
             helper.make_node("Tanh", ["i"], ["y"]),
             helper.make_node("Neg", ["d"], ["z"])]
    m = _model(nodes, [_fin("x", list(shape))], ["y", "z", "c"], inits)
    x = R.standard_normal(shape).astype(np.float32)
    x[0, 0] = np.nan
    _check(m, [{"x": x}], rtol=2e-6, atol=2e-6)


def test_shapes_from_the_input_cached_per_signature():
    # y = Reshape(x, [Shape(x)[0] * Shape(x)[1], -1]) + 1, for several shapes in turn
    inits = [("i0", np.array([0], np.int64)), ("i1", np.array([1], np.int64)),
             ("m1", np.array([-1], np.int64)), ("one", np.ones((1,), np.float32))]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["s0"]),
             helper.make_node("Gather", ["s", "i1"], ["s1"]),
             helper.make_node("Mul", ["s0", "s1"], ["n"]),
             helper.make_node("Concat", ["n", "m1"], ["shp"], axis=0),
             helper.make_node("Reshape", ["x", "shp"], ["r"]),
             helper.make_node("Add", ["r", "one"], ["y"])]
    m = _model(nodes, [_fin("x", ["a", "b", "c"])], ["y"], inits)
    feeds = [{"x": R.standard_normal(s).astype(np.float32)} for s in
             [(2, 3, 4), (5, 1, 2), (2, 3, 4), (1, 1, 1)]]
    _check(m, feeds)


def test_movement_ops_and_bad_indices():
    inits = [("pads", np.array([0, 2, 0, 3], np.int64))]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
             helper.make_node("Gather", ["p", "idx"], ["g"], axis=1),
             helper.make_node("Slice", ["p", "st", "en"], ["s"]),
             helper.make_node("Transpose", ["s"], ["y"], perm=[1, 0])]
    inits += [("st", np.array([1], np.int64)), ("en", np.array([-1], np.int64))]
    m = _model(nodes, [_fin("x", [3, 6]),
                       helper.make_tensor_value_info("idx", TensorProto.INT64, [2])],
               ["g", "y"], inits)
    x = R.standard_normal((3, 6)).astype(np.float32)
    sess = _check(m, [{"x": x, "idx": np.array([0, -1], np.int64)}])
    with pytest.raises(fastlstm.InvalidInput):
        sess.run(None, {"x": x, "idx": np.array([0, 99], np.int64)})
    with pytest.raises(fastlstm.InvalidInput):
        sess.run(None, {"x": x.astype(np.float64), "idx": np.array([0, 1], np.int64)})


def test_general_and_specialised_paths_agree_with_specialisation_off(monkeypatch):
    from fastlstm import config
    monkeypatch.setattr(config, "SPECIALISE", False)
    nodes = [helper.make_node("Sigmoid", ["x"], ["y"])]
    m = _model(nodes, [_fin("x", [2, 5])], ["y"])
    sess = fastlstm.InferenceSession(m.SerializeToString())
    x = R.standard_normal((2, 5)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], run_ort(m, {"x": x})[0],
                                   rtol=1e-6, atol=1e-6)
    assert sess._plan._specialiser is None


def test_split_and_gemm_binds():
    inits = [("sizes", np.array([2, 3, 1], np.int64)),
             ("B", R.standard_normal((4, 6)).astype(np.float32)),
             ("C", R.standard_normal((4,)).astype(np.float32))]
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1),
             helper.make_node("Gemm", ["x", "B", "C"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Sigmoid", ["b"], ["sb"])]
    m = _model(nodes, [_fin("x", [3, 6])], ["a", "sb", "c", "g"], inits)
    _check(m, [{"x": R.standard_normal((3, 6)).astype(np.float32)}], rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("opset,bounds", [
    (13, ("lo", "hi")), (13, ("", "hi")), (11, ("lo",)), (13, ()),
    (10, {"min": -0.5, "max": 0.7}), (7, {"max": 0.3})])
def test_clip_joins_the_fused_loop(opset, bounds):
    """Clip in every form (attribute bounds, input bounds, either absent)
    fused between two other ops; NaN passes through as in onnxruntime."""
    if isinstance(bounds, dict):
        clip = helper.make_node("Clip", ["m"], ["c"], **bounds)
    else:
        clip = helper.make_node("Clip", ["m", *bounds], ["c"])
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"]), clip,
             helper.make_node("Sigmoid", ["c"], ["y"])]
    inits = [("two", np.array(2, np.float32)), ("lo", np.array(-0.5, np.float32)),
             ("hi", np.array(0.7, np.float32))]
    inits = [(n, a) for n, a in inits if n == "two" or n in bounds]
    m = _model(nodes, [_fin("x", [3, 50])], ["y"], inits, opset=opset)
    x = R.standard_normal((3, 50)).astype(np.float32)
    x[0, 3] = np.nan
    sess = _check(m, [{"x": x}])
    fn = next(iter(sess._plan._specialiser._built.values()))
    body = [line.strip() for line in fn.source.splitlines()[1:]]
    # feed read, output allocated, one fused loop, return
    assert len(body) == 4 and body[1].endswith("np.float32)"), fn.source


def test_matmul_with_constant_weights_is_one_product():
    """A [T, 1, K] @ [K, N] head (exported dense layer) as one product."""
    w = R.standard_normal((64, 29)).astype(np.float32)
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_fin("x", [None, 1, 64])],
               ["y"], [("w", w)])
    _check(m, [{"x": R.standard_normal((t, 1, 64)).astype(np.float32)} for t in (1, 7, 250)],
           rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_rows_match_onnxruntime(op):
    m = _model([helper.make_node(op, ["x"], ["y"], axis=-1)], [_fin("x", [None, 29])], ["y"])
    x = R.standard_normal((250, 29)).astype(np.float32) * 8
    x[3, 5] = 80.0          # one dominant logit: the others underflow
    _check(m, [{"x": x}], rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("c_shape", [None, (40,), (1, 40), (5, 1), (1,), (5, 40)])
@pytest.mark.parametrize("trans", [(0, 0), (1, 1)])
def test_gemm_bind_forms(c_shape, trans):
    """Gemm with constant B and C in each broadcast form of C, transposes,
    alpha and beta: the packed product (bias rows) or numpy (other C)."""
    ta, tb = trans
    b = R.standard_normal((40, 24) if tb else (24, 40)).astype(np.float32)
    inits = [("b", b)]
    ins = ["a", "b"]
    if c_shape is not None:
        inits.append(("c", R.standard_normal(c_shape).astype(np.float32)))
        ins.append("c")
    m = _model([helper.make_node("Gemm", ins, ["y"], transA=ta, transB=tb, alpha=0.5,
                                 beta=2.0)],
               [_fin("a", [24, 5] if ta else [5, 24])], ["y"], inits, opset=13)
    a = R.standard_normal((24, 5) if ta else (5, 24)).astype(np.float32)
    _check(m, [{"a": a}], rtol=1e-5, atol=1e-5)


def test_fused_loop_reads_strided_slices_in_place():
    """An STFT magnitude: two slices of one conv-like output (other strides
    on two axes) squared, added and rooted in one loop, read in place."""
    starts = [("s0", np.array([0, 0], np.int64)), ("e0", np.array([5, 4], np.int64)),
              ("s1", np.array([5, 1], np.int64)), ("e1", np.array([10, 5], np.int64)),
              ("ax", np.array([1, 2], np.int64)), ("two", np.array(2, np.float32))]
    nodes = [helper.make_node("Slice", ["x", "s0", "e0", "ax"], ["re"]),
             helper.make_node("Slice", ["x", "s1", "e1", "ax"], ["im"]),
             helper.make_node("Pow", ["re", "two"], ["r2"]),
             helper.make_node("Pow", ["im", "two"], ["i2"]),
             helper.make_node("Add", ["r2", "i2"], ["s"]),
             helper.make_node("Sqrt", ["s"], ["y"])]
    m = _model(nodes, [_fin("x", [None, 10, 5])], ["y"], starts)
    sess = _check(m, [{"x": R.standard_normal((n, 10, 5)).astype(np.float32)}
                      for n in (1, 7)])
    for fn in sess._plan._specialiser._built.values():
        assert "ascontiguousarray" not in fn.source and fn.source.count("np.empty") == 1


@pytest.mark.parametrize("form", ["merge", "step", "reverse", "transpose"])
def test_fused_loop_over_views_of_every_stride(form):
    """The fused loop's views, read through their pointers: halves whose
    last two axes merge into one unit-stride run ("merge", Silero's STFT
    magnitude), every second element of the last axis (a stride of 2:
    the loop's other version), the last axis reversed (a negative stride),
    and a transposed operand."""
    ints = lambda *v: np.array(v, np.int64)     # noqa: E731
    if form == "transpose":
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
                 helper.make_node("Mul", ["t", "t"], ["m"]),
                 helper.make_node("Add", ["m", "u"], ["s"]),
                 helper.make_node("Sqrt", ["s"], ["y"])]
        m = _model(nodes, [_fin("x", [None, 6, 9]), _fin("u", [None, 9, 6])], ["y"], [])
        feeds = [{"x": R.standard_normal((n, 6, 9)).astype(np.float32),
                  "u": R.random((n, 9, 6)).astype(np.float32)} for n in (1, 5)]
    else:
        inits = [("s0", ints(0)), ("e0", ints(7)), ("s1", ints(7)), ("e1", ints(14)),
                 ("ax", ints(1)), ("two", np.array(2, np.float32))]
        if form == "step":
            inits = [("s0", ints(0, 0)), ("e0", ints(7, 8)), ("s1", ints(7, 1)),
                     ("e1", ints(14, 8)), ("ax", ints(1, 2)), ("st", ints(1, 2)),
                     ("two", np.array(2, np.float32))]
        elif form == "reverse":
            big = np.iinfo(np.int64).min
            inits = [("s0", ints(0, -1)), ("e0", ints(7, big)), ("s1", ints(7, -1)),
                     ("e1", ints(14, big)), ("ax", ints(1, 2)), ("st", ints(1, -1)),
                     ("two", np.array(2, np.float32))]
        extra = ["st"] if form in ("step", "reverse") else []
        nodes = [helper.make_node("Slice", ["x", "s0", "e0", "ax"] + extra, ["re"]),
                 helper.make_node("Slice", ["x", "s1", "e1", "ax"] + extra, ["im"]),
                 helper.make_node("Pow", ["re", "two"], ["r2"]),
                 helper.make_node("Pow", ["im", "two"], ["i2"]),
                 helper.make_node("Add", ["r2", "i2"], ["s"]),
                 helper.make_node("Sqrt", ["s"], ["y"])]
        m = _model(nodes, [_fin("x", [None, 14, 8])], ["y"], inits)
        feeds = [{"x": R.standard_normal((n, 14, 8)).astype(np.float32)} for n in (1, 6)]
    sess = _check(m, feeds)
    srcs = [fn.source for fn in sess._plan._specialiser._built.values()]
    assert all("ascontiguousarray" not in src for src in srcs)
    if form == "merge":         # [6, 7, 8] halves of [6, 14, 8]: axes of 6 and 56
        assert any(".reshape(s" in src for src in srcs)     # (at n = 1 they are C order)


def test_a_strided_feed_gets_a_run_of_its_own():
    """A feed of the same shape and dtype that is a strided view (every
    second column of a wider array) is a different signature: the code
    written for a C-contiguous feed would read it wrongly."""
    m = _add_chain(4, 16)
    wide = R.standard_normal((1, 32)).astype(np.float32)
    _check(m, [{"x": np.ascontiguousarray(wide[:, ::2])}, {"x": wide[:, ::2]}])


@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_then_bias_add_is_one_product(bias_first):
    """PyTorch's Linear on [T, B, K] exports as MatMul + Add: one packed
    product with the bias (an N that is not a multiple of 16, as 29 classes)."""
    w = R.standard_normal((64, 29)).astype(np.float32)
    b = R.standard_normal(29).astype(np.float32)
    add = ["b", "mm"] if bias_first else ["mm", "b"]
    m = _model([helper.make_node("MatMul", ["x", "w"], ["mm"]),
                helper.make_node("Add", add, ["y"])],
               [_fin("x", [None, 1, 64])], ["y"], [("w", w), ("b", b)])
    sess = _check(m, [{"x": R.standard_normal((t, 1, 64)).astype(np.float32)}
                      for t in (1, 250)], rtol=1e-5, atol=1e-5)
    for fn in sess._plan._specialiser._built.values():
        assert len(_steps(fn)) == 1, fn.source      # one product


def test_conv_on_a_read_only_feed_in_the_specialised_run():
    """The specialised run calls conv kernels itself; a read-only feed (or a
    view of one), which their signatures refuse, still runs."""
    w = R.standard_normal((4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [_fin("x", [2, 60])], ["y"],
               [("w", w), ("shape", np.array([2, 3, 20], np.int64))])
    x = R.standard_normal((2, 60)).astype(np.float32)
    ro = x.copy()
    ro.flags.writeable = False
    _check(m, [{"x": x}, {"x": ro}], rtol=1e-5, atol=1e-5)
