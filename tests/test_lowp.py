"""fastlstm's own reduced-precision weights (opt-in): int8 and bf16.

Their error is measured against the float32 model (itself checked against
onnxruntime elsewhere); the bounds below are loose multiples of what the
modes give on these models (int8 ~1e-2, bf16 ~2e-3 on outputs of magnitude
<= 1), so a broken kernel fails them by orders of magnitude.
"""
import numpy as np
import pytest

import fastlstm
from fastlstm import pack_lowp
from fastlstm.kernels import int8

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper as nh  # noqa: E402

BOUND = {"int8": 5e-2, "bf16": 1e-2}


def _model(op="LSTM", I=24, H=40, direction="forward", seed=0, seq_lens=False, lbr=None):
    rng = np.random.default_rng(seed)
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    D = 2 if direction == "bidirectional" else 1
    s = 1 / np.sqrt(H)
    inits = [nh.from_array(rng.uniform(-s, s, shape).astype(np.float32), n)
             for n, shape in (("W", (D, G * H, I)), ("R", (D, G * H, H)), ("B", (D, 2 * G * H)))]
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    ins = ["X", "W", "R", "B"] + (["lens"] if seq_lens else [])
    extra = {} if lbr is None else {"linear_before_reset": lbr}
    node = helper.make_node(op, ins, outs, hidden_size=H, direction=direction, **extra)
    vin = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])]
    if seq_lens:
        vin.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"]))
    g = helper.make_graph([node], "g", vin,
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in outs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m.SerializeToString()


def _session(model, weights, threads=1):
    o = fastlstm.SessionOptions()
    o.weights = weights
    o.intra_op_num_threads = threads
    return fastlstm.InferenceSession(model, o)


@pytest.mark.parametrize("weights", ["int8", "bf16"])
@pytest.mark.parametrize("op,direction,lbr", [("LSTM", "forward", None),
                                              ("LSTM", "bidirectional", None),
                                              ("RNN", "reverse", None), ("GRU", "forward", 0),
                                              ("GRU", "bidirectional", 1)])
def test_error_against_float32(weights, op, direction, lbr):
    m = _model(op, direction=direction, seq_lens=True, lbr=lbr)
    rng = np.random.default_rng(1)
    feed = {"X": rng.standard_normal((30, 3, 24)).astype(np.float32),
            "lens": np.array([30, 17, 0], np.int32)}
    ref = _session(m, "float32").run(None, feed)
    sess = _session(m, weights)
    out = sess.run(None, feed)
    for a, b in zip(out, ref):
        err = np.abs(a - b).max()
        assert 0 < err < BOUND[weights], err
    assert sess.get_modelmeta().custom_metadata_map["fastlstm.weights"] == weights
    # two threads give the same bits (directions split; one direction runs alone)
    for a, b in zip(_session(m, weights, threads=2).run(None, feed), out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_stream_equals_whole_sequence(weights):
    """Activations are quantized per row and per step, so streaming step by
    step gives the bits of the whole sequence."""
    m = _model("LSTM")
    x = np.random.default_rng(2).standard_normal((12, 1, 24)).astype(np.float32)
    sess = _session(m, weights)
    whole = sess.run(["Y"], {"X": x})[0]
    st = sess.stream()
    steps = np.concatenate([st.run(["Y"], {"X": x[t:t + 1]})[0] for t in range(12)])
    np.testing.assert_array_equal(steps, whole)


@pytest.mark.parametrize("weights,op", [("int8", "LSTM"), ("bf16", "LSTM"), ("int8", "GRU"),
                                        ("bf16", "GRU")])
def test_fastlstm_file_round_trip(tmp_path, weights, op):
    from fastlstm import fileformat
    from fastlstm.cli import main
    m = _model(op, direction="bidirectional", lbr=0 if op == "GRU" else None)
    src = tmp_path / "m.onnx"
    src.write_bytes(m)
    out = tmp_path / "m.fastlstm"
    assert main(["convert", str(src), "-o", str(out), "--weights", weights, "--dim", "T=5",
                 "--dim", "N=2"]) == 0
    x = np.random.default_rng(3).standard_normal((9, 2, 24)).astype(np.float32)
    loaded = fastlstm.InferenceSession(str(out))
    for a, b in zip(loaded.run(None, {"X": x}), _session(m, weights).run(None, {"X": x})):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_modelmeta().custom_metadata_map["fastlstm.weights"] == weights
    # a layer whose sizes do not match its spec is refused at load
    g = fileformat.load(str(out))
    n = next(n for n in g.nodes if n.layer is not None)
    bad = n.layer.packed
    bad.dirs[0].R = bad.dirs[0].R[:-16]
    with pytest.raises(fastlstm.InvalidModel, match="do not match"):
        fileformat.validate_graph(g)


def test_lowp_error_report():
    rows, feed = fastlstm.lowp_error(_model("LSTM"), "int8", dims={"T": 20, "N": 2})
    assert [r["output"] for r in rows] == ["Y", "Y_h", "Y_c"]
    for r in rows:
        assert 0 < r["max_abs_err"] < BOUND["int8"] and r["argmax_changed"] is not None
        assert 0 <= r["argmax_changed_count"] <= r["argmax_positions"]


def test_int8_product_against_numpy():
    """qgemm: per-row quantized rows x per-column int8 weights, the correction
    terms and the float epilogue, against integer numpy (rows of 0..127 never
    saturate; 0..255 rows saturate int16 pair sums as onnxruntime's AVX2 GEMM)."""
    from numba import njit
    rng = np.random.default_rng(0)
    K, N, M = 70, 80, 5
    x = rng.standard_normal((M, K)).astype(np.float32)
    q = rng.integers(-127, 128, (K, N)).astype(np.int8)
    sc = (rng.random(N) * 0.01 + 0.001).astype(np.float32)
    zp = np.zeros(N, np.float32)
    zp[3] = 5
    blob = int8.pack_weights(q, sc, zp)
    Q = int8.qrow_floats(K)

    @njit
    def run(xq, out):
        int8.qgemm(M, K, N, 0, N, xq.ctypes, 0, Q, blob.ctypes, out.ctypes, 0, N,
                   np.zeros(N, np.float32).ctypes)

    for qmax in (127.0, 255.0):
        xq = int8.quantize_rows(x, K, True, np.float32(qmax))
        out = np.zeros((M, N), np.float32)
        run(xq, out)
        rows = xq.reshape(M, Q)
        a = rows.view(np.uint8)[:, :K].astype(np.int64)
        s, z = rows[:, Q - 4], rows[:, Q - 3].astype(np.int64)
        Kp = int8.pad4(K)
        ap = np.zeros((M, Kp), np.int64)
        ap[:, :K] = a
        wp = np.zeros((Kp, N), np.int64)
        wp[:K] = q
        pairs = (ap.reshape(M, Kp // 2, 2)[:, :, :, None] * wp.reshape(Kp // 2, 2, N)).sum(2)
        raw = np.clip(pairs, -32768, 32767).sum(1)
        if qmax == 127.0:
            assert (np.abs(pairs) < 32767).all()
        v = raw - z[:, None] * q.astype(np.int64).sum(0) - zp.astype(np.int64) * (
            a.sum(1)[:, None] - K * z[:, None])
        np.testing.assert_array_equal(out, v.astype(np.float32) * (s[:, None] * sc))


def test_bf16_rounding():
    a = np.array([1.0, 1.00390625, 1.01171875, -3.1415927, 0.0, np.inf], np.float32)
    b = pack_lowp.from_bf16(pack_lowp.to_bf16(a))
    np.testing.assert_array_equal(b, [1.0, 1.0, 1.015625, -3.140625, 0.0, np.inf])
