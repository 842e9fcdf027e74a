"""Loop and Scan against onnxruntime: counted and condition-terminated loops,
loop-carried state, scan outputs, outer-scope reads, Scan over several
inputs with their own axes and directions, a Loop whose body holds an LSTM
step, and the forms of every opset that has one."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm.errors import UnsupportedOp

F, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 17 else 10
    return m.SerializeToString()


def c(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def check(blob, feeds, atol=1e-5):
    """Every feed through fastlstm (each twice: general and specialised run)
    against onnxruntime; returns the largest difference."""
    sess = fastlstm.InferenceSession(blob)
    ref = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed in feeds:
        want = ref.run(None, feed)
        for _ in range(3):
            got = sess.run(None, feed)
            for g, w in zip(got, want):
                assert g.shape == w.shape and g.dtype == w.dtype
                if g.size:
                    worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w))))
                np.testing.assert_allclose(g, w, atol=atol, rtol=1e-4)
    return worst


def counted_loop(opset=17, with_cond=True):
    """x <- x * a + iter (a read from the outer scope), scan output x, M from input."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["x_in", "a"], ["xa"]),
         helper.make_node("Cast", ["i"], ["fi"], to=F),
         helper.make_node("Add", ["xa", "fi"], ["x_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["x_out", "two"], ["scan_out"])],
        "body", [vi("i", I64, []), vi("cond_in", BOOL, []), vi("x_in", F, [3])],
        [vi("cond_out", BOOL, []), vi("x_out", F, [3]), vi("scan_out", F, [3])],
        [c("two", np.float32(2))])
    loop = helper.make_node("Loop", ["M", "T" if with_cond else "", "x0"], ["x_final", "xs"],
                            body=body)
    return model([loop], [vi("M", I64, []), vi("x0", F, [3]), vi("a", F, [3])],
                 [vi("x_final", F, [3]), vi("xs", F, None)], [c("T", np.bool_(True))], opset)


@pytest.mark.parametrize("opset", [11, 13, 16, 19, 21, 25])
def test_counted_loop_with_outer_read(opset):
    rng = np.random.default_rng(0)
    feeds = [{"M": np.array(m, np.int64), "x0": rng.standard_normal(3).astype(np.float32),
              "a": rng.standard_normal(3).astype(np.float32)} for m in (4, 4, 1, 7)]
    check(counted_loop(opset), feeds)
    check(counted_loop(opset, with_cond=False), feeds[:2])


def test_zero_iterations():
    feed = {"M": np.array(0, np.int64), "x0": np.ones(3, np.float32),
            "a": np.ones(3, np.float32)}
    check(counted_loop(), [feed])


def test_trip_count_changes_under_one_signature():
    """M's value is not part of the input shapes: a specialised run must not
    take the first run's trip count (or its outputs' shapes) as fixed."""
    sess = fastlstm.InferenceSession(counted_loop())
    x0, a = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
    for m in (3, 3, 3, 5, 2, 5):
        xf, xs = sess.run(None, {"M": np.array(m, np.int64), "x0": x0, "a": a})
        assert xs.shape == (m, 3)


def cond_loop(opset=17, M=True):
    """s <- s + step until s >= limit (limit and step read from outside), at most M."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "step"], ["s_out"]),
         helper.make_node("Less", ["s_out", "limit"], ["cond_out"]),
         helper.make_node("Unsqueeze", ["s_out", "ax"], ["s_col"]) if opset >= 13 else
         helper.make_node("Unsqueeze", ["s_out"], ["s_col"], axes=[0])],
        "body", [vi("i", I64, []), vi("cond_in", BOOL, []), vi("s_in", F, [])],
        [vi("cond_out", BOOL, []), vi("s_out", F, []), vi("s_col", F, [1])],
        [c("ax", np.array([0], np.int64))])
    loop = helper.make_node("Loop", ["M" if M else "", "go", "s0"], ["s_final", "trace"],
                            body=body)
    inputs = [vi("go", BOOL, []), vi("s0", F, []), vi("limit", F, []), vi("step", F, [])]
    if M:
        inputs.insert(0, vi("M", I64, []))
    return model([loop], inputs, [vi("s_final", F, []), vi("trace", F, None)], (), opset)


@pytest.mark.parametrize("opset", [11, 16, 25])
def test_condition_terminated_loops(opset):
    f = np.float32
    feeds = [{"go": np.array(True), "s0": np.array(0, f), "limit": np.array(l, f),
              "step": np.array(0.75, f)} for l in (3.0, 3.0, 10.0, -1.0)]
    feeds.append({"go": np.array(False), "s0": np.array(0, f), "limit": np.array(5, f),
                  "step": np.array(1, f)})
    check(cond_loop(opset, M=False), feeds)
    feeds_m = [dict(fd, M=np.array(m, np.int64)) for fd in feeds for m in (2, 100)]
    check(cond_loop(opset, M=True), feeds_m)


def test_loop_with_if_inside_and_shape_trip_count():
    """M = the first dim of an input (as exporters write it); the body branches
    on the iteration number (add the first two rows,
    subtract the others) and reads a row of an outer tensor."""
    then_g = helper.make_graph([helper.make_node("Add", ["acc_in", "row"], ["t_out"])],
                               "then", [], [vi("t_out", F, None)])
    else_g = helper.make_graph([helper.make_node("Sub", ["acc_in", "row"], ["e_out"])],
                               "else", [], [vi("e_out", F, None)])
    body = helper.make_graph(
        [helper.make_node("Gather", ["X", "i"], ["row"], axis=0),
         helper.make_node("Less", ["i", "two"], ["early"]),
         helper.make_node("If", ["early"], ["acc_out"], then_branch=then_g, else_branch=else_g),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [vi("i", I64, []), vi("cond_in", BOOL, []), vi("acc_in", F, None)],
        [vi("cond_out", BOOL, []), vi("acc_out", F, None), vi("row", F, None)],
        [c("two", np.int64(2))])
    nodes = [helper.make_node("Shape", ["X"], ["shp"]),
             helper.make_node("Gather", ["shp", "k0"], ["n"], axis=0),
             helper.make_node("Loop", ["n", "", "acc0"], ["acc", "rows"], body=body),
             helper.make_node("Shape", ["rows"], ["rows_shape"])]
    blob = model(nodes, [vi("X", F, ["T", 4]), vi("acc0", F, [4])],
                 [vi("acc", F, [4]), vi("rows", F, None), vi("rows_shape", I64, [2])],
                 [c("k0", np.int64(0))])
    rng = np.random.default_rng(1)
    feeds = [{"X": rng.standard_normal((t, 4)).astype(np.float32),
              "acc0": np.zeros(4, np.float32)} for t in (5, 5, 2, 9)]
    check(blob, feeds)


def scan_model(opset, in_axes, in_dirs, out_axes, out_dirs):
    """state <- tanh(state @ W + x1 + x2 * s) (W an outer initializer, s an outer
    input); scan outputs: the state and x1 * 2."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["st_in", "W"], ["sw"]),
         helper.make_node("Mul", ["x2", "s"], ["x2s"]),
         helper.make_node("Add", ["sw", "x1"], ["t0"]),
         helper.make_node("Add", ["t0", "x2s"], ["t1"]),
         helper.make_node("Tanh", ["t1"], ["st_out"]),
         helper.make_node("Mul", ["x1", "two"], ["y2"])],
        "body", [vi("st_in", F, [2, 4]), vi("x1", F, [2, 4]), vi("x2", F, [2, 4])],
        [vi("st_out", F, [2, 4]), vi("st_out_copy", F, [2, 4]), vi("y2", F, [2, 4])],
        [c("two", np.float32(2))])
    body.node.append(helper.make_node("Identity", ["st_out"], ["st_out_copy"]))
    attrs = dict(num_scan_inputs=2, scan_input_axes=in_axes, scan_input_directions=in_dirs,
                 scan_output_axes=out_axes, scan_output_directions=out_dirs)
    scan = helper.make_node("Scan", ["st0", "A", "Bq"], ["st", "ys", "y2s"], body=body, **attrs)
    shapes = {0: ["T", 2, 4], 1: [2, "T", 4], 2: [2, 4, "T"], -1: [2, 4, "T"]}
    rng = np.random.default_rng(2)
    return model([scan], [vi("st0", F, [2, 4]), vi("A", F, shapes[in_axes[0]]),
                          vi("Bq", F, shapes[in_axes[1]]), vi("s", F, [])],
                 [vi("st", F, [2, 4]), vi("ys", F, None), vi("y2s", F, None)],
                 [c("W", (rng.standard_normal((4, 4)) * 0.5).astype(np.float32))], opset)


@pytest.mark.parametrize("opset,in_axes,in_dirs,out_axes,out_dirs", [
    (9, [0, 0], [0, 0], [0, 0], [0, 0]),
    (9, [0, 1], [1, 0], [1, 0], [0, 1]),
    (11, [2, -1], [0, 1], [-1, 2], [1, 0]),
    (16, [1, 2], [1, 1], [0, -2], [1, 1]),
    (19, [0, 1], [0, 1], [2, 1], [0, 1]),
    (21, [1, 0], [1, 0], [0, 0], [0, 0]),
    (25, [2, 1], [0, 1], [1, 2], [1, 0]),
])
def test_scan_axes_directions(opset, in_axes, in_dirs, out_axes, out_dirs):
    if opset < 11 and any(a < 0 for a in in_axes + out_axes):
        pytest.skip("negative axes need Scan 11")
    blob = scan_model(opset, in_axes, in_dirs, out_axes, out_dirs)
    rng = np.random.default_rng(3)

    def arr(ax, T):
        shape = {0: (T, 2, 4), 1: (2, T, 4), 2: (2, 4, T), -1: (2, 4, T)}[ax]
        return rng.standard_normal(shape).astype(np.float32)

    feeds = [{"st0": rng.standard_normal((2, 4)).astype(np.float32),
              "A": arr(in_axes[0], T), "Bq": arr(in_axes[1], T),
              "s": np.array(0.3, np.float32)} for T in (6, 6, 1, 11)]
    check(blob, feeds)


def test_scan_8_refused_naming_the_node():
    body = helper.make_graph([helper.make_node("Add", ["s_in", "x"], ["s_out"])], "b",
                             [vi("s_in", F, [2]), vi("x", F, [2])], [vi("s_out", F, [2])])
    scan = helper.make_node("Scan", ["", "s0", "X"], ["s"], body=body, num_scan_inputs=1,
                            name="old_scan")
    blob = model([scan], [vi("s0", F, [1, 2]), vi("X", F, [1, 5, 2])], [vi("s", F, [1, 2])],
                 (), 8)
    with pytest.raises(UnsupportedOp, match="old_scan"):
        fastlstm.InferenceSession(blob)


H, In = 8, 5


def lstm_step_loop(weights_outside):
    """A decoding-style Loop: per iteration one LSTM step over row i of an outer
    input, h and c carried, the step's output scanned out."""
    rng = np.random.default_rng(4)
    W = (rng.standard_normal((1, 4 * H, In)) * 0.4).astype(np.float32)
    R = (rng.standard_normal((1, 4 * H, H)) * 0.4).astype(np.float32)
    Bb = (rng.standard_normal((1, 8 * H)) * 0.1).astype(np.float32)
    w_inits = [c("W", W), c("R", R), c("B", Bb)]
    body = helper.make_graph(
        [helper.make_node("Gather", ["X", "i"], ["xt"], axis=0),            # [B, In]
         helper.make_node("Unsqueeze", ["xt", "ax0"], ["xt3"]),             # [1, B, In]
         helper.make_node("LSTM", ["xt3", "W", "R", "B", "", "h_in", "c_in"],
                          ["y", "h_out", "c_out"], hidden_size=H),
         helper.make_node("Squeeze", ["y", "ax01"], ["yt"]),                # [B, H]
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [vi("i", I64, []), vi("cond_in", BOOL, []), vi("h_in", F, [1, "B", H]),
                 vi("c_in", F, [1, "B", H])],
        [vi("cond_out", BOOL, []), vi("h_out", F, [1, "B", H]), vi("c_out", F, [1, "B", H]),
         vi("yt", F, ["B", H])],
        [] if weights_outside else w_inits)
    nodes = [helper.make_node("Shape", ["X"], ["shp"]),
             helper.make_node("Gather", ["shp", "k0"], ["n"], axis=0),
             helper.make_node("Loop", ["n", "", "h0", "c0"], ["h", "cc", "Y"], body=body)]
    inits = [c("k0", np.int64(0)), c("ax0", np.array([0], np.int64)),
             c("ax01", np.array([0, 1], np.int64))] + (w_inits if weights_outside else [])
    return model(nodes, [vi("X", F, ["T", "B", In]), vi("h0", F, [1, "B", H]),
                         vi("c0", F, [1, "B", H])],
                 [vi("h", F, [1, "B", H]), vi("cc", F, [1, "B", H]), vi("Y", F, None)],
                 inits, 14)


@pytest.mark.parametrize("weights_outside", [True, False])
def test_loop_with_lstm_step(weights_outside):
    blob = lstm_step_loop(weights_outside)
    rng = np.random.default_rng(5)
    feeds = [{"X": rng.standard_normal((T, B, In)).astype(np.float32),
              "h0": rng.standard_normal((1, B, H)).astype(np.float32),
              "c0": rng.standard_normal((1, B, H)).astype(np.float32)}
             for T, B in ((7, 2), (7, 2), (1, 3), (12, 1))]
    check(blob, feeds)
    # the body is planned once, its LSTM packed once (weights from either scope)
    sess = fastlstm.InferenceSession(blob)
    loops = [r for r in sess._plan.runners if r.node.op_type == "Loop"]
    assert len(loops) == 1
    plan = loops[0].plan
    (lstm,) = plan.recurrent_nodes()
    assert lstm.packed is not None
    sess.run(None, feeds[0])
    assert loops[0].plan is plan


@pytest.mark.parametrize("specialise", [False, True])
def test_shapes_of_control_flow_outputs_are_not_cached(monkeypatch, specialise):
    """The executor caches shape arithmetic per input shapes; the shape of an
    If or Loop output depends on input values (the branch, the trip count), so
    a Shape of it must be computed on every run."""
    from fastlstm import config
    monkeypatch.setattr(config, "SPECIALISE", specialise)
    then_g = helper.make_graph([helper.make_node("Concat", ["x", "x"], ["a"], axis=0)], "t",
                               [], [vi("a", F, None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "e", [],
                               [vi("b", F, None)])
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Identity", ["x"], ["row"])], "body",
                             [vi("i", I64, []), vi("cond_in", BOOL, [])],
                             [vi("cond_out", BOOL, []), vi("row", F, None)])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Shape", ["y"], ["sy"]),
             helper.make_node("Loop", ["M", ""], ["rows"], body=body),
             helper.make_node("Shape", ["rows"], ["sr"])]
    blob = model(nodes, [vi("c", BOOL, []), vi("M", I64, []), vi("x", F, [2])],
                 [vi("sy", I64, [1]), vi("sr", I64, [2])])
    sess = fastlstm.InferenceSession(blob)
    x = np.ones(2, np.float32)
    for c, m in ((True, 3), (True, 3), (False, 3), (False, 5), (True, 1), (False, 0)):
        sy, sr = sess.run(None, {"c": np.array(c), "M": np.array(m, np.int64), "x": x})
        assert sy.tolist() == [4 if c else 2] and sr.tolist() == ([m, 2] if m else [0])
