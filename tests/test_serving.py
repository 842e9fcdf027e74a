"""Streams, packed variable-length batches, concurrent callers, the micro-batcher."""
import threading

import numpy as np
import pytest

import fastlstm
from fastlstm import FastLSTMError, InvalidInput, UnsupportedOp
from helpers import SPEC_OUTPUTS, random_weights, recurrent_model, run_ort


def _model(op, H=24, I=5, direction="forward", state_inputs=True, layout=0):
    rng = np.random.default_rng(len(op) + H)
    D = 2 if direction == "bidirectional" else 1
    arrays = random_weights(rng, op, D, H, I, peepholes=(op == "LSTM"), scale=0.3)
    arrays["X"] = np.zeros((3, 2, I), np.float32)
    if state_inputs:
        arrays["initial_h"] = np.zeros((D, 2, H), np.float32)
        if op == "LSTM":
            arrays["initial_c"] = np.zeros((D, 2, H), np.float32)
    if layout:
        arrays["X"] = arrays["X"].transpose(1, 0, 2).copy()
        for k in ("initial_h", "initial_c"):
            if k in arrays:
                arrays[k] = arrays[k].transpose(1, 0, 2).copy()
    model = recurrent_model(op, arrays, {"hidden_size": H, "direction": direction,
                                         "layout": layout},
                            initializers=["W", "R", "B", "P"], symbolic=True)
    return fastlstm.InferenceSession(model.SerializeToString()), model


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_stream_in_pieces_equals_whole(op, layout):
    sess, _ = _model(op, layout=layout)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((11, 2, 5)).astype(np.float32)
    if layout:
        x = x.transpose(1, 0, 2).copy()
    whole = sess.run(None, {"X": x,
                            **{k: np.zeros((2, 1, 24) if layout else (1, 2, 24), np.float32)
                               for k in ([i.name for i in sess.get_inputs()][1:])}})
    st = sess.stream(batch_size=2)
    pieces = []
    for a, b in [(0, 1), (1, 5), (5, 6), (6, 11)]:
        chunk = x[a:b] if layout == 0 else x[:, a:b]
        pieces.append(st.run(None, {"X": np.ascontiguousarray(chunk)}))
    y = np.concatenate([p[0] for p in pieces], axis=0 if layout == 0 else 1)
    np.testing.assert_allclose(y, whole[0], atol=1e-6, rtol=0)
    for k in range(1, len(whole)):
        np.testing.assert_allclose(pieces[-1][k], whole[k], atol=1e-6, rtol=0)
    # state is reported in [D, B, H]
    (name, state), = st.state.items()
    h_whole = whole[1] if layout == 0 else whole[1].transpose(1, 0, 2)
    np.testing.assert_allclose(state["h"], h_whole, atol=1e-6, rtol=0)


def test_stream_reset_set_state_and_independence():
    sess, _ = _model("LSTM")
    x = np.random.default_rng(2).standard_normal((4, 2, 5)).astype(np.float32)
    a, b = sess.stream(2), sess.stream(2)
    ya = a.run(["Y"], {"X": x})[0]
    a.run(["Y"], {"X": x})
    yb = b.run(["Y"], {"X": x})[0]            # b is independent of a
    np.testing.assert_array_equal(ya, yb)
    a.reset()
    np.testing.assert_array_equal(a.run(["Y"], {"X": x})[0], ya)
    name = next(iter(a.state))
    h = np.full((1, 2, 24), 0.5, np.float32)
    a.set_state(name, h=h)
    np.testing.assert_array_equal(a.state[name]["h"], h)
    with pytest.raises(InvalidInput, match="float32"):
        a.set_state(name, h=h.astype(np.float64))
    with pytest.raises(InvalidInput, match="not a recurrent node"):
        a.set_state("nope", h=h)
    with pytest.raises(InvalidInput, match="carried by the stream"):
        a.run(None, {"X": x, "initial_h": h})
    with pytest.raises(InvalidInput, match="batch"):
        a.run(None, {"X": x[:, :1]})


def test_stream_refuses_bidirectional():
    sess, _ = _model("GRU", direction="bidirectional")
    with pytest.raises(UnsupportedOp, match="forward"):
        sess.stream()


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_run_sequences_equal_running_alone(op, direction, layout):
    sess, model = _model(op, direction=direction, layout=layout)
    rng = np.random.default_rng(3)
    seqs = [rng.standard_normal((L, 5)).astype(np.float32) for L in (7, 1, 12, 0, 7, 3)]
    got = sess.run_sequences(seqs)
    assert len(got) == len(seqs)
    D = 2 if direction == "bidirectional" else 1
    for seq, out in zip(seqs, got):
        x = seq[:, None, :] if layout == 0 else seq[None, :, :]
        zeros = np.zeros((D, 1, 24) if layout == 0 else (1, D, 24), np.float32)
        feed = {"X": np.ascontiguousarray(x), "initial_h": zeros}
        if op == "LSTM":
            feed["initial_c"] = zeros
        alone = sess.run(None, feed)
        for name, a in zip(SPEC_OUTPUTS[op], alone):
            b_axis = (2 if name == "Y" else 1) if layout == 0 else 0
            np.testing.assert_array_equal(out[name], np.take(a, 0, axis=b_axis))
        if len(seq) and layout == 0:      # onnxruntime refuses layout=1
            for a, e in zip(alone, run_ort(model, feed)):
                np.testing.assert_allclose(a, e, atol=1e-5, rtol=1e-4)


def test_run_sequences_errors():
    sess, _ = _model("RNN")
    assert sess.run_sequences([]) == []
    with pytest.raises(InvalidInput, match="dtype"):
        sess.run_sequences([np.zeros((3, 5))])
    with pytest.raises(InvalidInput, match="input size"):
        sess.run_sequences([np.zeros((3, 4), np.float32)])
    with pytest.raises(InvalidInput, match="not an output"):
        sess.run_sequences([np.zeros((3, 5), np.float32)], ["Z"])


def test_concurrent_callers_match_sequential():
    sess, _ = _model("LSTM", H=64)
    rng = np.random.default_rng(4)
    feeds = [{"X": rng.standard_normal((9, 2, 5)).astype(np.float32),
              "initial_h": np.zeros((1, 2, 64), np.float32),
              "initial_c": np.zeros((1, 2, 64), np.float32)} for _ in range(12)]
    expected = [sess.run(None, f) for f in feeds]
    got = [None] * len(feeds)

    def work(i):
        for _ in range(20):
            got[i] = sess.run(None, feeds[i])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, e in zip(got, expected):
        for a, b in zip(g, e):
            np.testing.assert_array_equal(a, b)


def test_micro_batcher_load():
    """8 threads x 150 requests of random lengths: every answer is the sequential
    one (none lost, none swapped), and requests really were batched."""
    sess, _ = _model("GRU", H=32)
    rng = np.random.default_rng(5)
    reqs = [rng.standard_normal((int(rng.integers(1, 20)), 5)).astype(np.float32)
            for _ in range(8 * 150)]
    expected = [sess.run_sequences([r])[0] for r in reqs]
    got = [None] * len(reqs)
    with fastlstm.MicroBatcher(sess, max_batch=16, max_wait_us=300, workers=2) as mb:
        def work(t):
            for i in range(t, len(reqs), 8):
                got[i] = mb.run(reqs[i], timeout=60)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert mb.batches < len(reqs)
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for k in g:
            np.testing.assert_array_equal(g[k], e[k])


def test_micro_batcher_errors_reach_their_caller_and_close_drains():
    sess, _ = _model("RNN")
    mb = fastlstm.MicroBatcher(sess, max_batch=8, max_wait_us=2000)
    good = [mb.submit(np.ones((3, 5), np.float32)) for _ in range(5)]
    bad = mb.submit(np.ones((3, 4), np.float32))          # wrong input size
    bad_type = mb.submit(np.ones((3, 5)))                  # float64
    mb.close()                                             # drains what was queued
    for f in good:
        assert f.result(timeout=10)["Y"].shape == (3, 1, 24)
    with pytest.raises(InvalidInput, match="input size"):
        bad.result(timeout=10)
    with pytest.raises(InvalidInput, match="dtype"):
        bad_type.result(timeout=10)
    with pytest.raises(FastLSTMError, match="closed"):
        mb.submit(np.ones((3, 5), np.float32))


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_stream_empty_chunk_keeps_state_and_outputs_stay_private(op):
    """A chunk of no steps leaves the carried state alone; outputs handed to the
    caller are not the stream's state (changing them changes nothing)."""
    sess, _ = _model(op)
    x = np.random.default_rng(3).standard_normal((3, 2, 5)).astype(np.float32)
    a, b = sess.stream(2), sess.stream(2)
    outs = a.run(None, {"X": x})
    for o in outs:
        o[...] = 123.0                       # the caller scribbles on its outputs
    before = a.state
    a.run(None, {"X": x[:0]})                # T = 0
    after = a.state
    for name in before:
        np.testing.assert_array_equal(before[name]["h"], after[name]["h"])
    b.run(None, {"X": x})
    np.testing.assert_array_equal(a.run(["Y"], {"X": x})[0], b.run(["Y"], {"X": x})[0])


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_stream_state_in_place_under_thread_splits(op, batch, monkeypatch):
    """Two threads split a stream's layer by tiles (batch 1) or by rows and
    update its state in place; every chunk's outputs and the final state equal
    those of a single-threaded stream bit for bit."""
    from fastlstm import config
    monkeypatch.setattr(config, "THREAD_MIN_WORK", 0)
    rng = np.random.default_rng(9)
    arrays = random_weights(rng, op, 1, 130, 5, peepholes=(op == "LSTM"), scale=0.2)
    arrays["X"] = np.zeros((2, batch, 5), np.float32)
    arrays["initial_h"] = np.zeros((1, batch, 130), np.float32)
    if op == "LSTM":
        arrays["initial_c"] = np.zeros((1, batch, 130), np.float32)
    model = recurrent_model(op, arrays, {"hidden_size": 130},
                            initializers=["W", "R", "B", "P"], symbolic=True)
    streams = []
    for threads in (1, 2):
        so = fastlstm.SessionOptions()
        so.intra_op_num_threads = threads
        streams.append(fastlstm.InferenceSession(model.SerializeToString(), so).stream(batch))
    for t in range(4):
        x = rng.standard_normal((t + 1, batch, 5)).astype(np.float32)
        a, b = (st.run(None, {"X": x}) for st in streams)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    (name, sa), = streams[0].state.items()
    sb = streams[1].state[name]
    for k in ("h", "c"):
        if sa[k] is not None:
            np.testing.assert_array_equal(sa[k], sb[k])
            assert np.abs(sa[k]).max() > 0
