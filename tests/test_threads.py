"""Every way the front end splits work across threads gives the single-thread
answer bit for bit, and onnxruntime's within tolerance."""
import zlib

import numpy as np
import pytest

import fastlstm
from fastlstm import config
from helpers import feeds, random_weights, recurrent_model, run_ort

# (direction, batch, hidden) that select each split: directions, rows, tiles
# (tiles split in chunks of 64 hidden units: 130 units -> 3 chunks, 70 -> 2)
SHAPES = {"dirs": ("bidirectional", 3, 40), "rows": ("forward", 5, 40),
          "tiles": ("reverse", 1, 130), "tiles-uneven": ("forward", 1, 70),
          "too-small-to-split": ("forward", 1, 20)}


def _session(model, threads):
    so = fastlstm.SessionOptions()
    so.intra_op_num_threads = threads
    return fastlstm.InferenceSession(model.SerializeToString(), so)


@pytest.mark.parametrize("flag", [0, 1])
@pytest.mark.parametrize("split", list(SHAPES))
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_thread_splits(op, split, flag, monkeypatch):
    if flag and op == "RNN":
        pytest.skip("RNN has no flag attribute")
    monkeypatch.setattr(config, "THREAD_MIN_WORK", 0)
    direction, Bn, H = SHAPES[split]
    D = 2 if direction == "bidirectional" else 1
    # (a seed fixed across processes: str hashes are salted per process)
    rng = np.random.default_rng(zlib.crc32(f"{op}-{split}-{flag}".encode()))
    arrays = random_weights(rng, op, D, H, 7, peepholes=(op == "LSTM"), scale=0.2)
    arrays["X"] = rng.standard_normal((12, Bn, 7)).astype(np.float32)
    arrays["sequence_lens"] = rng.integers(0, 13, Bn).astype(np.int32)
    arrays["sequence_lens"][0] = 12
    arrays["initial_h"] = rng.standard_normal((D, Bn, H)).astype(np.float32)
    attrs = {"hidden_size": H, "direction": direction}
    if op != "RNN":
        attrs["input_forget" if op == "LSTM" else "linear_before_reset"] = flag
    model = recurrent_model(op, arrays, attrs, initializers=["W", "R", "B", "P"])
    feed = feeds(model, arrays)
    one = _session(model, 1).run(None, feed)
    for threads in (2, 3):
        many = _session(model, threads).run(None, feed)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)
    # 12 steps of a recurrence that amplifies rounding (H = 130, weights at
    # 0.2): against a float64 reference both engines are within about 1e-5,
    # and they differed from each other by up to 2.4e-5 on 4 of 60 seeds
    for a, b in zip(one, run_ort(model, feed)):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)


def test_env_variable_sets_default_threads(monkeypatch):
    monkeypatch.setenv("FASTLSTM_NUM_THREADS", "2")
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "RNN", 1, 4, 3)
    arrays["X"] = np.zeros((2, 1, 3), np.float32)
    model = recurrent_model("RNN", arrays, {"hidden_size": 4}, initializers=["W", "R", "B"])
    s = fastlstm.InferenceSession(model.SerializeToString())
    assert s.num_threads == 2
    monkeypatch.setenv("FASTLSTM_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="FASTLSTM_NUM_THREADS"):
        fastlstm.InferenceSession(model.SerializeToString())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_session_with_threads_works_after_fork(monkeypatch):
    """A forked child has no worker threads; it must run alone, not hang."""
    import os
    monkeypatch.setattr(config, "THREAD_MIN_WORK", 0)     # make the parent use the team
    rng = np.random.default_rng(0)
    arrays = random_weights(rng, "LSTM", 2, 64, 8)
    arrays["X"] = rng.standard_normal((5, 2, 8)).astype(np.float32)
    model = recurrent_model("LSTM", arrays, {"hidden_size": 64, "direction": "bidirectional"},
                            initializers=["W", "R", "B"])
    s = _session(model, 2)
    expected = s.run(None, {"X": arrays["X"]})[0]
    pid = os.fork()
    if pid == 0:                                   # child
        try:
            ok = np.array_equal(s.run(None, {"X": arrays["X"]})[0], expected)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_chunked_projection(op, direction, layout, monkeypatch):
    """Batch 64 at H=200: the front end projects a few steps at a time (2-8 per
    chunk for these ops and thread counts), so chunks start mid-sequence, rows
    end inside chunks and reverse rows start from their own last step."""
    import reference as ref
    from helpers import SPEC_OUTPUTS
    monkeypatch.setattr(config, "THREAD_MIN_WORK", 0)
    T, Bn, I, H = 11, 64, 5, 200
    rng = np.random.default_rng(layout * 10 + len(op) + len(direction))
    arrays = random_weights(rng, op, 1, H, I, peepholes=(op == "LSTM"), scale=0.1)
    arrays["X"] = rng.standard_normal((T, Bn, I)).astype(np.float32)
    lens = rng.integers(0, T + 1, Bn).astype(np.int32)
    lens[:3] = (T, 0, 1)
    arrays["sequence_lens"] = lens
    attrs = {"hidden_size": H, "direction": direction}
    if layout == 1:
        arrays["X"] = np.ascontiguousarray(arrays["X"].transpose(1, 0, 2))
        attrs["layout"] = 1
    model = recurrent_model(op, arrays, attrs, initializers=["W", "R", "B", "P"])
    feed = feeds(model, arrays)
    one = _session(model, 1).run(None, feed)
    for threads in (2, 3):
        for a, b in zip(one, _session(model, threads).run(None, feed)):
            np.testing.assert_array_equal(a, b)
    if layout == 0:
        expected = run_ort(model, feed)
    else:
        names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
        full = getattr(ref, op.lower())(*[arrays.get(n) for n in
                                          names[:8 if op == "LSTM" else 6]], **attrs)
        expected = [full[SPEC_OUTPUTS[op].index(o)] for o in SPEC_OUTPUTS[op]]
    for a, b in zip(one, expected):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_panel_order_changes_nothing(op):
    """Successive calls alternate the order in which steps read the weight
    panels (kernels.common.IP_ORDER); every call gives the same bits."""
    rng = np.random.default_rng(5)
    arrays = random_weights(rng, op, 1, 150, 6, scale=0.2)
    arrays["X"] = rng.standard_normal((5, 2, 6)).astype(np.float32)
    model = recurrent_model(op, arrays, {"hidden_size": 150}, initializers=["W", "R", "B"])
    feed = feeds(model, arrays)
    s = _session(model, 1)
    first, second, third = (s.run(None, feed) for _ in range(3))
    for a, b, c in zip(first, second, third):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    for a, b in zip(first, run_ort(model, feed)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
