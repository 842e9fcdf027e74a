"""fastlstm._poolcore: StreamPool's per-chunk hot path in C (submit, the
batch's gather and scatter, futures).  Its results equal the numpy path's
bit for bit; arrays it cannot copy row by row (non-contiguous chunks,
another dtype, slots out of range) go the numpy way or are refused."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import fastlstm
from fastlstm import FastLSTMError, InvalidInput, StreamPool
from fastlstm import _poolcore as core
from fastlstm import pool as pool_mod
from helpers import SR



def _no_c_copies(monkeypatch):
    """The pool's numpy path: every C row copy refuses."""
    for name in ("fill_rows", "take_rows", "put_rows", "put_tails"):
        monkeypatch.setattr(pool_mod._core, name, lambda *a: False)


def _run_streams(sess, audio, T, **kw):
    pool = StreamPool(sess, context={"input": 64}, constants={"sr": SR}, worker=False,
                      max_batch=16, max_wait_us=0, **kw)
    ids = [pool.open() for _ in audio]
    got = [[] for _ in audio]
    for k in range(T):
        futs = [pool.submit(i, a[k * 512:(k + 1) * 512]) for i, a in zip(ids, audio)]
        while pool.run_ready(force=True):
            pass
        for s, f in enumerate(futs):
            got[s].append(f.result())
    states = [pool.get_state(i) for i in ids]
    return got, states


def test_c_path_equals_numpy_path_bitwise(silero, monkeypatch):
    rng = np.random.default_rng(3)
    S, T = 37, 3
    audio = [(rng.standard_normal(T * 512) * 0.3).astype(np.float32) for _ in range(S)]
    _run_streams(silero, audio, T)          # (the session specialises each batch size)
    fast, fast_states = _run_streams(silero, audio, T)
    # results are views of their batch's output, not of buffers reused later
    kept = [[r["output"].copy() for r in g] for g in fast]
    _run_streams(silero, audio, T)
    for g, k in zip(fast, kept):
        for r, c in zip(g, k):
            np.testing.assert_array_equal(r["output"], c)
    _no_c_copies(monkeypatch)
    slow, slow_states = _run_streams(silero, audio, T)
    for s in range(S):
        for a, b in zip(fast[s], slow[s]):
            assert set(a) == {"output"}
            np.testing.assert_array_equal(a["output"], b["output"])
        for name in fast_states[s]:
            np.testing.assert_array_equal(fast_states[s][name], slow_states[s][name])


class _Sub(np.ndarray):
    pass


def test_non_contiguous_and_odd_chunks_take_the_numpy_path(silero):
    """A strided chunk (same shape and dtype as the fast ones), a Fortran one
    and a subclass run in the same batch as contiguous ones; each equals its
    contiguous copy's result."""
    rng = np.random.default_rng(4)
    base = [(rng.standard_normal(1024) * 0.3).astype(np.float32) for _ in range(6)]
    odd = [base[0][::2], base[1][:512], base[2][:512].view(_Sub), base[3][1:513],
           base[4][:512], base[5][::2]]
    plain = [np.ascontiguousarray(a) for a in odd]
    outs = []
    for chunks in (odd, plain):
        pool = StreamPool(silero, context={"input": 64}, constants={"sr": SR}, worker=False,
                          max_wait_us=0)
        ids = [pool.open() for _ in chunks]
        futs = [pool.submit(i, c) for i, c in zip(ids, chunks)]
        while pool.run_ready(force=True):
            pass
        futs += [pool.submit(i, c) for i, c in zip(ids, chunks)]
        while pool.run_ready(force=True):
            pass
        outs.append([f.result()["output"] for f in futs])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_bad_chunks_in_a_batch_fail_alone(silero):
    rng = np.random.default_rng(6)
    pool = StreamPool(silero, context={"input": 64}, constants={"sr": SR}, worker=False,
                      max_wait_us=0)
    ids = [pool.open() for _ in range(8)]
    good = [(rng.standard_normal(512) * 0.3).astype(np.float32) for _ in ids]
    first = [pool.submit(i, g) for i, g in zip(ids, good)]
    while pool.run_ready(force=True):
        pass
    [f.result() for f in first]
    before = [pool.get_state(i) for i in ids]
    bad = {1: np.zeros(512, np.float64), 3: np.zeros((2, 512), np.float32),
           4: "not audio", 6: np.zeros(511, np.int32)}
    futs = [pool.submit(i, bad.get(k, good[k])) for k, i in enumerate(ids)]
    while pool.run_ready(force=True):
        pass
    for k, f in enumerate(futs):
        if k in bad:
            with pytest.raises(InvalidInput):
                f.result()
            assert isinstance(f.exception(), InvalidInput)
            after = pool.get_state(ids[k])
            for name in after:
                np.testing.assert_array_equal(after[name], before[k][name])
        else:
            assert f.exception() is None and f.result()["output"].shape == (1,)
    # the fast key still serves good chunks afterwards
    f = pool.submit(ids[1], good[1])
    pool.run_ready(force=True)
    assert f.result()["output"].shape == (1,)
    assert isinstance(pool.submit(99999, good[0]).exception(), InvalidInput)


def _scale_model(rank2):
    """y = 2 x: x [batch, 2, T] (chunks [2, t], context along axis 1) or
    [batch, T, 2] (chunks [t, 2], context along axis 0)."""
    shape = ["batch", "T", 2] if rank2 else ["batch", 2, "T"]
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                          [two])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return fastlstm.InferenceSession(m.SerializeToString())


@pytest.mark.parametrize("axis", [0, 1])
def test_context_of_rank2_chunks_on_either_axis(axis):
    sess = _scale_model(rank2=axis == 0)
    rng = np.random.default_rng(7)
    pool = StreamPool(sess, state={}, context={"x": (3, axis)}, worker=False, max_wait_us=0)
    S = 5
    ids = [pool.open() for _ in range(S)]
    tails = [np.zeros((3, 2) if axis == 0 else (2, 3), np.float32) for _ in range(S)]
    for step in range(3):
        t = 4 + step
        chunks = [rng.standard_normal((t, 2) if axis == 0 else (2, t)).astype(np.float32)
                  for _ in range(S)]
        futs = [pool.submit(i, c) for i, c in zip(ids, chunks)]
        while pool.run_ready(force=True):
            pass
        for s, f in enumerate(futs):
            x = np.concatenate([tails[s], chunks[s]], axis=axis)
            np.testing.assert_array_equal(f.result()["y"], 2 * x)
            tails[s] = x[-3:] if axis == 0 else x[:, -3:]


def test_row_copies_refuse_what_does_not_fit():
    store = np.arange(2 * 10 * 3, dtype=np.float32).reshape(2, 10, 3)
    slots = np.array([4, 0, 9], np.intp)
    out = np.empty((2, 3, 3), np.float32)
    assert core.take_rows(store, slots, out, 1)
    np.testing.assert_array_equal(out, np.take(store, slots, axis=1))
    assert not core.take_rows(store, np.array([4, 10, 0], np.intp), out, 1)   # slot range
    assert not core.take_rows(store, np.array([4, -1, 0], np.intp), out, 1)
    assert not core.take_rows(store, slots.astype(np.int32), out, 1)          # slots dtype
    assert not core.take_rows(store, slots, out.astype(np.float64), 1)        # dtype
    assert not core.take_rows(store, slots, np.empty((3, 3, 3), np.float32), 1)  # shape
    assert not core.take_rows(store, slots, out, 3)                           # axis
    assert not core.take_rows(store[:, ::2], slots[:2], out[:, :2], 1)        # strided
    new = np.ones((2, 3, 3), np.float32)
    assert core.put_rows(store, slots, 2, new, 1)
    assert (store[:, [4, 0]] == 1).all() and not (store[:, 9] == 1).all()
    assert not core.put_rows(store, slots, 4, new, 1)                         # n > rows
    assert not core.put_rows(store, slots, 2, np.asfortranarray(new), 1)
    assert not core.put_rows(store, slots, 2, new.astype(np.float64), 1)
    ro = store.copy()
    ro.flags.writeable = False
    assert not core.put_rows(ro, slots, 2, new, 1)
    ctx = np.zeros((10, 2), np.float32)
    buf = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    assert core.put_tails(ctx, slots, 3, buf)
    np.testing.assert_array_equal(ctx[slots], buf[:, 3:])
    assert not core.put_tails(ctx, np.array([1, 2, 30], np.intp), 3, buf)
    assert not core.put_tails(ctx.astype(np.float64), slots, 3, buf)
    assert not core.put_tails(np.zeros((10, 6), np.float32), slots, 3, buf)   # wider than a row
    with pytest.raises(FastLSTMError):
        core.slots_of([], np.zeros(3, np.int32))
    with pytest.raises(FastLSTMError):
        core.dicts_of(["a", "b"], [list(buf)], 3)
    with pytest.raises(FastLSTMError):
        core.dicts_of(["a"], [list(buf)], 4)
    with pytest.raises(TypeError):
        core.dicts_of(["a"], [buf], 3)
    got = core.dicts_of(["a", "b"], [list(buf), [7] * 3], 3)
    assert [d["b"] for d in got] == [7] * 3 and all((d["a"] == buf[i]).all()
                                                    for i, d in enumerate(got))
    with pytest.raises(FastLSTMError):
        core.finish_many([core.PoolFuture()], [], 0.0)
    with pytest.raises(TypeError):
        core.finish_many([object()], [1], 0.0)


def test_fill_rows_checks_every_chunk_before_copying():
    futs = [core.PoolFuture(core._Stream(k, k + 1), (np.full(4, k, np.float32),), None)
            for k in range(3)]
    slots = np.zeros(4, np.intp)
    core.slots_of(futs, slots)
    assert slots.tolist() == [1, 2, 3, 0]
    ctx = np.arange(8, dtype=np.float32).reshape(4, 2)
    buf = np.full((4, 6), -1, np.float32)
    assert core.fill_rows(futs, 0, buf, 4, ctx, slots)
    want = np.concatenate([ctx[slots], np.stack([np.full(4, k) for k in (0, 1, 2)] +
                                                [np.zeros(4)])], axis=1)
    np.testing.assert_array_equal(buf, want)
    for bad in (np.zeros(4, np.float64), np.zeros(5, np.float32), np.zeros(8, np.float32)[::2],
                [0.0] * 4):
        futs[1].chunk = (bad,)
        buf[:] = -1
        assert not core.fill_rows(futs, 0, buf, 4, ctx, slots)
        assert (buf == -1).all()            # nothing copied
    futs[1].chunk = (np.zeros(4, np.float32),)
    assert not core.fill_rows(futs, 1, buf, 4, ctx, slots)        # no such input
    assert not core.fill_rows(futs, 0, buf, 2, ctx, slots)        # fewer rows than chunks
    assert not core.fill_rows(futs, 0, buf, 4, ctx, np.array([1, 2, 3, 4], np.intp))
    assert not core.fill_rows(futs, 0, buf, 4, ctx.astype(np.float64), slots)
    assert core.fill_rows(futs, 0, np.zeros((4, 4), np.float32), 4, None, slots)


def test_future_api():
    f = core.PoolFuture()
    assert not f.done() and f.t_done is None
    with pytest.raises(TimeoutError):
        f.result(timeout=0.01)
    seen = []
    f.add_done_callback(seen.append)
    f.add_done_callback(lambda _: 1 / 0)          # a callback's error is not the chunk's
    f.set_result({"y": 1})
    assert f.done() and seen == [f] and f.result() == {"y": 1} and f.exception() is None
    f.add_done_callback(seen.append)
    assert seen == [f, f]
    g = core.PoolFuture()
    g.set_exception(InvalidInput("bad"))
    assert isinstance(g.exception(), InvalidInput)
    with pytest.raises(InvalidInput, match="bad"):
        g.result()


def test_form_batch_one_chunk_per_stream_in_order():
    from collections import deque
    sts = [core._Stream(k, k + 1) for k in range(4)]
    A, B, C, D = sts
    order = [A, B, A, C, B, D, A]
    q = deque(core.PoolFuture(st, (k,), None) for k, st in enumerate(order))
    batch = core.form_batch(q, 3)
    assert [f.chunk[0] for f in batch] == [0, 1, 3]
    assert [f.chunk[0] for f in q] == [2, 4, 5, 6]      # skipped ones lead, in order
    batch = core.form_batch(q, 10)
    assert [f.chunk[0] for f in batch] == [2, 4, 5] and [f.chunk[0] for f in q] == [6]
    assert [f.chunk[0] for f in core.form_batch(q, 10)] == [6] and not q
    assert core.form_batch(q, 5) == []
    big = deque(core.PoolFuture(core._Stream(k, k), (k,), None) for k in range(5000))
    batch = core.form_batch(big, 128)
    assert [f.chunk[0] for f in batch] == list(range(128)) and len(big) == 5000 - 128
    with pytest.raises(TypeError):
        core.form_batch(deque([object()]), 4)


@pytest.mark.parametrize("worker", [False, True])
def test_capacity_trial_answers_every_chunk(worker):
    """The capacity benchmark's trial (its harvest keeps answer times, the
    latencies come from the schedule's due times at the end)."""
    from fastlstm import bench_streams as bs
    spec = bs.case_spec("silero")
    eng = bs.FastlstmEngine(spec, max_batch=16, max_wait_us=1000, warm=False, worker=worker)
    r = eng.trial(24, 0.25, 1.0)
    assert r["answered"] == r["total"] == 24 * 8 and r["ok"]
    assert 0 < r["p50_ms"] <= r["p99_ms"] < 1000
    sched = bs._Schedule(7, 0.032, 0.1, 5.0)
    assert [sched.due(k) for k in range(sched.total)] == sched.dues().tolist()


def test_generator_cost_runs():
    from fastlstm import bench_streams as bs
    rows = bs.generator_cost(streams=(32,), seconds=0.2, repeats=1)
    assert len(rows) == 1 and rows[0]["streams"] == 32 and rows[0]["cpu_us_per_chunk"] > 0
    assert 0 <= rows[0]["sleep_us_per_chunk"] and rows[0]["sleeps_per_s"] > 0
    assert "load generator alone" in bs.format_generator(rows)


def test_schedule_first_after_matches_due():
    from fastlstm import bench_streams as bs
    rng = np.random.default_rng(8)
    for n in (1, 3, 7, 1500):
        sched = bs._Schedule(n, 512 / 16000, 0.2, 1000.0 + rng.random())
        dues = [sched.due(k) for k in range(sched.total)]
        for now in list(rng.uniform(sched.start - 0.01, dues[-1] + 0.01, 200)) + dues[:50]:
            for k0 in (0, sched.total // 3):
                want = next((k for k in range(k0, sched.total) if dues[k] > now), sched.total)
                assert sched.first_after(now, k0) == want


def test_threads_pushing_chunks_of_changing_shapes():
    """The fast key (last shape, dtype, key) changes as threads push chunks of
    other lengths; every result still equals its stream run alone."""
    import threading
    sess = fastlstm.InferenceSession(fastlstm.example_model("lstm_forward"))
    rng = np.random.default_rng(9)
    S, K = 8, 12
    chunks = [[rng.standard_normal((int(rng.integers(1, 4)), 64)).astype(np.float32)
               for _ in range(K)] for _ in range(S)]
    got = [[None] * K for _ in range(S)]
    with StreamPool(sess, max_wait_us=200, max_batch=8) as pool:
        ids = [pool.open() for _ in range(S)]

        def run(s):
            for k in range(K):
                got[s][k] = pool.push(ids[s], chunks[s][k], timeout=60)

        threads = [threading.Thread(target=run, args=(s,)) for s in range(S)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in range(S):
        st = sess.stream()
        for k in range(K):
            want = st.run(None, {"X": chunks[s][k][:, None]})
            np.testing.assert_allclose(got[s][k]["Y_h"], want[1][:, 0], atol=1e-6, rtol=0)
