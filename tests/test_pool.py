"""fastlstm.StreamPool: many streams over one session, batched across streams;
each stream's results equal running it alone."""
import asyncio
import os
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastlstm
from fastlstm import FastLSTMError, InvalidInput, StreamPool
from helpers import SR

HERE = os.path.dirname(os.path.abspath(__file__))


def _silero_alone(sess, audio):
    """Probabilities of one stream run alone, chunk by chunk, as the README does."""
    state = np.zeros((2, 1, 128), np.float32)
    tail = np.zeros((1, 64), np.float32)
    out = []
    for i in range(0, len(audio), 512):
        x = np.concatenate([tail, audio[None, i:i + 512]], axis=1)
        p, state = sess.run(["output", "stateN"], {"input": x, "state": state, "sr": SR})
        tail = x[:, -64:]
        out.append(p[0])
    return out, state[:, 0]


def test_silero_hundreds_of_streams_random_order_join_leave(silero):
    rng = np.random.default_rng(0)
    speech = np.load(os.path.join(HERE, "models", "silero", "speech_16k.npy"))
    speech = speech.astype(np.float32) / 32768
    S = 240
    lengths = rng.integers(1, 7, S)          # chunks per stream
    starts = rng.integers(0, len(speech) - 7 * 512, S)
    audio = [speech[a:a + n * 512] * rng.uniform(0.2, 1.5) for a, n in zip(starts, lengths)]
    # an event list: each stream opens, pushes its chunks in order, closes;
    # streams interleave at random (some close before others open)
    events = []
    for s in range(S):
        events += [(s, k) for k in range(lengths[s])]
    rng.shuffle(events)
    seq = []
    nxt = [0] * S
    for s, _ in events:                     # per stream, chunks in their own order
        seq.append((s, nxt[s]))
        nxt[s] += 1
    pool = StreamPool(silero, context={"input": 64}, constants={"sr": SR}, max_batch=32,
                      max_wait_us=300, capacity=16)
    assert pool.mode == "external" and pool.pairs == {"state": "stateN"}
    ids, got, finals = {}, {s: [] for s in range(S)}, {}
    pending = []
    for s, k in seq:
        if k == 0:
            ids[s] = pool.open()
        pending.append((s, pool.submit(ids[s], audio[s][k * 512:(k + 1) * 512])))
        if len(pending) >= 97:          # wait for a few at a time: streams come and go
            for s2, f in pending:
                got[s2].append(f.result(timeout=60)["output"])
                if len(got[s2]) == lengths[s2]:
                    state = pool.get_state(ids[s2])["state"]
                    finals[s2] = state
                    pool.close(ids[s2])
            pending = []
    for s2, f in pending:
        got[s2].append(f.result(timeout=60)["output"])
        if len(got[s2]) == lengths[s2]:
            finals[s2] = pool.get_state(ids[s2])["state"]
            pool.close(ids[s2])
    assert pool.batches < len(seq)          # chunks were batched
    assert len(pool) == 0
    assert pool._next_slot < S              # slots were reused
    for s in range(S):
        want, want_state = _silero_alone(silero, audio[s])
        # Bitwise: Silero's items come out of a batch with the bits they
        # have alone (test_silero_session_is_batch_invariant), and the
        # pool's own gathering and scattering add nothing (also
        # test_pool_state_handling_is_exact, with batches of one).
        np.testing.assert_array_equal(np.concatenate(got[s]), np.concatenate(want))
        np.testing.assert_array_equal(finals[s], want_state)
    pool.shutdown()


def test_silero_session_is_batch_invariant(silero):
    """Each item of a batched Silero run has the bits it has alone: the
    convolutions take the same kernel at every batch size, the fused
    elementwise loops do not contract a product and a sum into an FMA
    (contracted, the STFT's magnitude moved by an ulp between batch sizes),
    and a Sigmoid or Tanh run alone computes as fused (with numpy's tanh, a
    session's first, unspecialised calls moved the probability by an ulp)."""
    rng = np.random.default_rng(3)
    for B in (2, 5, 16, 37):
        x = (rng.standard_normal((B, 576)) * 0.3).astype(np.float32)
        st = (rng.standard_normal((2, B, 128)) * 0.3).astype(np.float32)
        out, state = silero.run(["output", "stateN"], {"input": x, "state": st, "sr": SR})
        for i in range(B):
            o1, s1 = silero.run(["output", "stateN"],
                                {"input": x[i:i + 1], "state": st[:, i:i + 1], "sr": SR})
            np.testing.assert_array_equal(s1[:, 0], state[:, i])
            np.testing.assert_array_equal(o1[0], out[i])


def test_pool_state_handling_is_exact(silero):
    """With batches of one, the kernels compute as alone: streams interleaved in
    random order through the pool give the same bits as each run alone."""
    rng = np.random.default_rng(5)
    S, T = 12, 4
    audio = [(rng.standard_normal(T * 512) * 0.3).astype(np.float32) for _ in range(S)]
    order = [(s, k) for s in range(S) for k in range(T)]
    order.sort(key=lambda sk: (sk[1], rng.random()))
    with StreamPool(silero, context={"input": 64}, constants={"sr": SR}, max_batch=1,
                    max_wait_us=0) as pool:
        ids = [pool.open() for _ in range(S)]
        futs = {(s, k): pool.submit(ids[s], audio[s][k * 512:(k + 1) * 512])
                for s, k in order}
        got = {sk: f.result()["output"][0] for sk, f in futs.items()}
        finals = [pool.get_state(i)["state"] for i in ids]
    for s in range(S):
        want, want_state = _silero_alone(silero, audio[s])
        np.testing.assert_array_equal([got[s, k] for k in range(T)], np.concatenate(want))
        np.testing.assert_array_equal(finals[s], want_state)


def test_invalid_chunk_fails_alone_and_moves_no_state(silero):
    rng = np.random.default_rng(1)
    with StreamPool(silero, context={"input": 64}, constants={"sr": SR},
                    max_wait_us=20000) as pool:
        ids = [pool.open() for _ in range(6)]
        first = [pool.submit(i, rng.standard_normal(512).astype(np.float32)) for i in ids]
        [f.result() for f in first]
        before = {i: pool.get_state(i) for i in ids}
        good = {i: rng.standard_normal(512).astype(np.float32) for i in ids}
        bad_id = ids[2]
        futs = {}
        for i in ids:
            if i == bad_id:
                # 36 samples + 64 of context: too short for the model's STFT
                futs[i] = pool.submit(i, np.ones(36, np.float32))
            else:
                futs[i] = pool.submit(i, good[i])
        with pytest.raises(FastLSTMError):
            futs[bad_id].result()
        for i in ids:
            if i != bad_id:
                futs[i].result()
        after = pool.get_state(bad_id)
        for k in before[bad_id]:
            np.testing.assert_array_equal(after[k], before[bad_id][k])
        # refused by push itself
        with pytest.raises(InvalidInput, match="dtype"):
            pool.push(bad_id, np.zeros(512, np.float64))
        with pytest.raises(InvalidInput, match="rank"):
            pool.push(bad_id, np.zeros((1, 512), np.float32))
        with pytest.raises(InvalidInput, match="no open stream"):
            pool.push(12345, np.zeros(512, np.float32))
        # the failed stream goes on from where it was
        r = pool.push(bad_id, good[bad_id])
        sess_state = before[bad_id]["state"][:, None].copy()
        x = np.concatenate([before[bad_id]["context:input"], good[bad_id]])[None]
        p, _ = silero.run(["output", "stateN"], {"input": x, "state": sess_state, "sr": SR})
        np.testing.assert_allclose(r["output"], p[0], atol=1e-6, rtol=0)


def _gather_model():
    """y = (state + table[idx]) * x; stateN = state + table[idx]: an index out of
    range fails the run after the chunk passed the pool's own checks."""
    tab = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "table")
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["row"], axis=0),
         helper.make_node("Add", ["state", "row"], ["stateN"]),
         helper.make_node("Mul", ["stateN", "x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, ["batch", 3])], [tab])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return fastlstm.InferenceSession(m.SerializeToString())


def test_batch_failing_as_a_whole_is_retried_stream_by_stream():
    sess = _gather_model()
    with StreamPool(sess, max_wait_us=50000, max_batch=8) as pool:
        assert pool.pairs == {"state": "stateN"} and pool.data_inputs == ["x", "idx"]
        ids = [pool.open() for _ in range(5)]
        x = np.ones(3, np.float32)
        futs = [pool.submit(i, {"x": x, "idx": np.array(k % 4 if k != 3 else 9)})
                for k, i in enumerate(ids)]
        with pytest.raises(InvalidInput, match="Gather"):
            futs[3].result()
        for k, f in enumerate(futs):
            if k != 3:
                np.testing.assert_array_equal(f.result()["y"], np.arange(3) + 3 * (k % 4))
        np.testing.assert_array_equal(pool.get_state(ids[3])["state"], np.zeros(3))
        np.testing.assert_array_equal(pool.get_state(ids[1])["state"], [3, 4, 5])
        # the next chunk of every stream continues its own state
        out = [pool.submit(i, {"x": x, "idx": np.array(0)}) for i in ids]
        for k, f in enumerate(out):
            want = (np.arange(3) + 3 * (k % 4) if k != 3 else 0) + np.arange(3)
            np.testing.assert_array_equal(f.result()["y"], want)


def test_batch_buckets_few_and_tight():
    """Batch sizes: few (each is a specialisation of the session, which keeps
    32) and little padding (padding rows cost as much as real ones)."""
    from fastlstm.pool import _bucket
    for mb in (1, 3, 8, 9, 64, 100, 128, 256):
        sizes = {_bucket(n, mb) for n in range(1, mb + 1)}
        assert len(sizes) <= 22 and max(sizes) == mb
        for n in range(1, mb + 1):
            b = _bucket(n, mb)
            assert n <= b <= mb and (n <= 12 or b - n < n / 4), (mb, n, b)
            assert b - n <= (3 if n <= 32 else 7 if n <= 64 else 15 if n <= 128 else 31), (n, b)
    assert sorted({_bucket(n, 40) for n in range(1, 41)}) == \
        [1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 40]


def test_internal_state_streams_equal_streams_alone():
    """A model whose LSTM state lives inside (our Stream): chunks of different
    lengths from many streams; each equals its own fastlstm.Stream."""
    sess = fastlstm.InferenceSession(fastlstm.example_model("lstm_forward"))
    rng = np.random.default_rng(2)
    with StreamPool(sess, max_wait_us=2000, max_batch=64) as pool:
        assert pool.mode == "internal" and pool.data_inputs == ["X"]
        S = 120
        chunks = [[rng.standard_normal((int(rng.integers(1, 4)), 64)).astype(np.float32)
                   for _ in range(int(rng.integers(1, 5)))] for _ in range(S)]
        ids = [pool.open() for _ in range(S)]
        futs = [[] for _ in range(S)]
        todo = [(s, k) for s in range(S) for k in range(len(chunks[s]))]
        todo.sort(key=lambda sk: (sk[1], rng.random()))   # shuffled, each stream in order
        for s, k in todo:
            futs[s].append(pool.submit(ids[s], chunks[s][k]))
        for s in range(S):
            st = sess.stream()
            for k, f in enumerate(futs[s]):
                want = st.run(None, {"X": chunks[s][k][:, None]})
                got = f.result()
                assert set(got) == {"Y", "Y_h", "Y_c"}
                np.testing.assert_allclose(got["Y"], want[0][:, :, 0], atol=1e-6, rtol=0)
                np.testing.assert_allclose(got["Y_h"], want[1][:, 0], atol=1e-6, rtol=0)
                np.testing.assert_allclose(got["Y_c"], want[2][:, 0], atol=1e-6, rtol=0)
        assert pool.bytes_per_stream >= 2 * 128 * 4


def test_async_and_threads(silero):
    rng = np.random.default_rng(3)
    audio = rng.standard_normal((16, 3 * 512)).astype(np.float32) * 0.3
    want = [_silero_alone(silero, a)[0] for a in audio]
    with StreamPool(silero, context={"input": 64}, constants={"sr": SR}) as pool:
        async def one(s):
            sid = pool.open()
            out = [(await pool.apush(sid, audio[s, k * 512:(k + 1) * 512]))["output"]
                   for k in range(3)]
            pool.close(sid)
            return out

        async def main():
            return await asyncio.gather(*[one(s) for s in range(8)])
        got = asyncio.run(main())
        results = {}

        def worker(s):
            sid = pool.open()
            results[s] = [pool.push(sid, audio[s, k * 512:(k + 1) * 512])["output"]
                          for k in range(3)]
            pool.close(sid)
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(8, 16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in range(8):
        np.testing.assert_allclose(np.concatenate(got[s]), np.concatenate(want[s]), atol=1e-6)
    for s in range(8, 16):
        np.testing.assert_allclose(np.concatenate(results[s]), np.concatenate(want[s]),
                                   atol=1e-6)


def test_pool_without_worker_runs_batches_on_the_callers_thread(silero):
    """worker=False: run_ready runs a batch only once it is ready (max_batch
    queued, or the oldest waited max_wait_us), on the calling thread; results
    equal each stream alone; push and shutdown run what is queued; a bad
    chunk still fails alone."""
    rng = np.random.default_rng(7)
    S, T = 10, 3
    audio = (rng.standard_normal((S, T * 512)) * 0.3).astype(np.float32)
    pool = StreamPool(silero, context={"input": 64}, constants={"sr": SR}, max_batch=4,
                      max_wait_us=10_000_000, worker=False)
    assert pool._worker is None and pool.ready_at() is None and pool.run_ready() == 0
    ids = [pool.open() for _ in range(S)]
    futs = [pool.submit(ids[s], audio[s, :512]) for s in range(3)]
    assert pool.ready_at() > 0 and pool.run_ready() == 0     # 3 of 4, within the wait
    assert not any(f.done() for f in futs)
    futs += [pool.submit(ids[s], audio[s, :512]) for s in range(3, S)]
    assert pool.ready_at() == 0.0
    assert pool.run_ready() == 4 and all(f.done() for f in futs[:4])
    assert pool.run_ready() == 4 and pool.run_ready() == 0   # 2 left, not ready
    assert pool.run_ready(force=True) == 2
    bad = pool.submit(ids[0], np.zeros(7, np.float32))        # refused at submit
    rest = {}
    for k in range(1, T):
        for s in range(S):
            rest[s, k] = pool.submit(ids[s], audio[s, k * 512:(k + 1) * 512])
    last = pool.push(ids[1], audio[1, :512])                  # runs what is before it
    assert all(f.done() for f in rest.values())
    pool.shutdown()
    with pytest.raises(InvalidInput):
        bad.result()
    for s in range(S):
        want, _ = _silero_alone(silero, audio[s])
        got = [futs[s].result()["output"]] + [rest[s, k].result()["output"] for k in range(1, T)]
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-6)
    want, _ = _silero_alone(silero, np.concatenate([audio[1], audio[1, :512]]))
    np.testing.assert_allclose(last["output"], want[-1], atol=1e-6)
    with StreamPool(silero, context={"input": 64}, constants={"sr": SR}) as threaded:
        with pytest.raises(FastLSTMError):
            threaded.run_ready()


def test_stft_kernel_computes_each_frame_alone():
    """The STFT kernel (Silero's first layer in a pool's batches) gives a row
    the same bits alone as in a batch: no lane's result depends on another's."""
    from fastlstm.kernels import dft
    from fastlstm.kernels.conv import G_OW, G_SW, G_W
    N, F, hop, T, P = 256, 129, 128, 640, 4
    n = np.arange(N)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N)
    ang = 2 * np.pi * np.outer(np.arange(F), n) / N
    w = np.concatenate([window * np.cos(ang), -window * np.sin(ang)])[:, None, :]
    conv = dft.STFTConv(dft.match_windowed_dft(w.astype(np.float32)), None)
    geo = np.zeros(32, np.int64)
    geo[G_W], geo[G_SW], geo[G_OW] = T, hop, P
    B = 37
    x = np.random.default_rng(0).standard_normal((B, 1, T)).astype(np.float32)
    y = np.zeros((B, 2 * F, P), np.float32)
    conv(x.reshape(-1), None, geo, y.reshape(-1))
    for b in (0, 5, 36):
        y1 = np.zeros((1, 2 * F, P), np.float32)
        conv(x[b].reshape(-1), None, geo, y1.reshape(-1))
        np.testing.assert_array_equal(y1[0], y[b])


def test_state_pairs_detected_declared_and_refused():
    seq = fastlstm.InferenceSession(os.path.join(HERE, "models", "silero",
                                                 "silero_vad_16k_sequence.onnx"))
    from fastlstm.pool import find_state_pairs
    assert find_state_pairs(seq.get_inputs(), seq.get_outputs()) == {"h": "hn", "c": "cn"}
    fwd = fastlstm.InferenceSession(fastlstm.example_model("lstm_forward"))
    assert find_state_pairs(fwd.get_inputs(), fwd.get_outputs()) == \
        {"initial_h": "Y_h", "initial_c": "Y_c"}
    p = StreamPool(fwd, state={"initial_h": "Y_h", "initial_c": "Y_c"}, outputs=["Y"])
    try:
        assert p.mode == "external" and p._axis == {"X": 1, "initial_h": 1, "initial_c": 1}
        a, b = p.open(), p.open()
        x = np.ones((2, 64), np.float32)
        ya, yb = p.push(a, x)["Y"], p.push(b, x)["Y"]
        np.testing.assert_array_equal(ya, yb)
        st = fwd.stream()
        np.testing.assert_allclose(p.push(a, x)["Y"],
                                   (st.run(["Y"], {"X": np.concatenate([x, x])[:, None]})[0]
                                    [2:, :, 0]), atol=1e-6)
    finally:
        p.shutdown()
    with pytest.raises(InvalidInput, match="not an output"):
        StreamPool(fwd, state={"initial_h": "nope"})
    with pytest.raises(InvalidInput, match="not an input"):
        StreamPool(fwd, constants={"sr": 1})
    with pytest.raises(InvalidInput, match="max_batch"):
        StreamPool(fwd, max_batch=0)


def test_close_pending_reopen_and_idle():
    sess = _gather_model()
    with StreamPool(sess, max_wait_us=0, idle_timeout=10.0) as pool:
        a = pool.open()
        f = pool.submit(a, {"x": np.ones(3, np.float32), "idx": np.array(1)})
        pool.close(a)                       # its chunk is still answered
        np.testing.assert_array_equal(f.result()["y"], [3, 4, 5])
        assert a not in pool
        b = pool.open()                     # reuses the slot, with a fresh state
        np.testing.assert_array_equal(pool.push(b, {"x": np.ones(3, np.float32),
                                                    "idx": np.array(0)})["y"], [0, 1, 2])
        import time
        assert pool.reap_idle(time.monotonic() + 5) == []
        assert pool.reap_idle(time.monotonic() + 11) == [b]
        assert len(pool) == 0
    with pytest.raises(FastLSTMError, match="closed"):
        pool.open()


def test_fixed_batch_model_runs_one_stream_per_call_and_memory_reported():
    """silero_vad_openvino_16k.onnx fixes batch 1: the pool runs each chunk alone."""
    sess = fastlstm.InferenceSession(os.path.join(HERE, "models", "silero",
                                                  "silero_vad_openvino_16k.onnx"))
    rng = np.random.default_rng(4)
    audio = [(rng.standard_normal(3 * 512) * 0.3).astype(np.float32) for _ in range(3)]
    with StreamPool(sess, context={"input": 64}, max_wait_us=1000) as pool:
        assert pool.max_batch == 1 and pool.pairs == {"state": "stateN"}
        ids = [pool.open() for _ in audio]
        futs = [[pool.submit(i, a[k * 512:(k + 1) * 512]) for i, a in zip(ids, audio)]
                for k in range(3)]
        # state [2, 128] float32 + 64 samples of context, + the stream's record
        assert 2 * 128 * 4 + 64 * 4 <= pool.bytes_per_stream < 2 * 128 * 4 + 64 * 4 + 400
    for s, a in enumerate(audio):
        state = np.zeros((2, 1, 128), np.float32)
        tail = np.zeros((1, 64), np.float32)
        for k in range(3):
            x = np.concatenate([tail, a[None, k * 512:(k + 1) * 512]], axis=1)
            p, state = sess.run(["output", "stateN"], {"input": x, "state": state})
            tail = x[:, -64:]
            np.testing.assert_allclose(futs[k][s].result()["output"], p[0], atol=1e-6)


def test_capacity_breakdown_times_each_part():
    """``stream_capacity.py --breakdown``: each part of a batched call timed, the
    graph's lines named (a smoke test on the tagger: small and quick)."""
    from fastlstm.bench_streams import breakdown, format_breakdown
    res = breakdown("tagger", sizes=(4,), repeats=2, lines=3)
    row = res["rows"][0]
    parts = ("submit", "take", "gather", "graph", "scatter", "finish")
    assert row["B"] == 4 and all(row[k] >= 0 for k in parts) and row["graph"] > 0
    assert abs(row["total"] - sum(row[k] for k in parts)) < 1e-9
    assert any("LSTM" in line or "Layer" in line for _, line in row["graph_lines"])
    assert "| 4 |" in format_breakdown(res, peak=1e11)
