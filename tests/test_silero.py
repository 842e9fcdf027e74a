"""Silero VAD (tests/models/silero, silero-vad 6.2.3) streamed over a real speech
recording, through fastlstm and onnxruntime (1 thread), chunk by chunk as the
package's ONNX wrapper streams it.

The protocol: 512 new samples per chunk at 16 kHz (256 at 8 kHz), preceded by
the last 64 (32) samples of the previous chunk (zeros before the first); the
last chunk is padded with zeros; `state` [2, batch, 128] starts at zero and is
the previous call's `stateN`; `sr` is an int64 scalar where the model takes it.
Each engine carries its own state and context, as two users would.
The sequence model takes every frame (context + chunk) as one row and carries
the LSTM's h and c itself.
"""
import contextlib
import functools
import json
import os

import numpy as np
import pytest

import fastlstm

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "silero")
TOL = 1e-4
CHUNK = {16000: 512, 8000: 256}
CONTEXT = {16000: 64, 8000: 32}

# file -> sample rates it is made for (the 16k-only ones give nonsense at 8 kHz)
STREAMED = {
    "silero_vad.onnx": (16000, 8000),
    "silero_vad_16k_op15.onnx": (16000,),
    "silero_vad_op18_ifless.onnx": (16000, 8000),
    "silero_vad_half.onnx": (16000,),
    "silero_vad_openvino_16k.onnx": (16000,),
}
SEQUENCE = "silero_vad_16k_sequence.onnx"
CASES = [(f, sr) for f, rates in STREAMED.items() for sr in rates]


def model_path(name):
    return os.path.join(HERE, name)


@functools.lru_cache(maxsize=None)
def audio(sr):
    """The recording as float32 in [-1, 1), as the wrapper is given it."""
    return np.load(os.path.join(HERE, f"speech_{sr // 1000}k.npy")).astype(np.float32) / 32768.0


def utterances():
    with open(os.path.join(HERE, "speech.json")) as f:
        return [(u["start"], u["end"]) for u in json.load(f)["utterances"]]


@contextlib.contextmanager
def _until_supported():
    """(Every Silero variant loads and runs: an UnsupportedOp here is a failure.)"""
    yield


def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3   # the op18 file has unused initializers ORT warns about
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def fastlstm_session(path):
    with _until_supported():
        return fastlstm.InferenceSession(path)


def frames(x, sr):
    """[n_chunks, context + chunk]: each chunk preceded by the previous one's
    tail, zeros before the first; the last chunk zero-padded."""
    n, c = CHUNK[sr], CONTEXT[sr]
    x = np.concatenate([x, np.zeros((-len(x)) % n, np.float32)]).reshape(-1, n)
    ctx = np.concatenate([np.zeros((1, c), np.float32), x[:-1, -c:]])
    return np.ascontiguousarray(np.concatenate([ctx, x], axis=1))


def stream(sess, x, sr, batch=1):
    """Run ``x`` ([batch, samples] or [samples]) chunk by chunk as the wrapper
    does; the per-chunk probabilities [n_chunks, batch] and every stateN."""
    x = np.atleast_2d(x)
    assert x.shape[0] == batch
    names = {i.name for i in sess.get_inputs()}
    n, c = CHUNK[sr], CONTEXT[sr]
    x = np.concatenate([x, np.zeros((batch, (-x.shape[1]) % n), np.float32)], axis=1)
    state = np.zeros((2, batch, 128), np.float32)
    context = np.zeros((batch, c), np.float32)
    probs, states = [], []
    for i in range(0, x.shape[1], n):
        chunk = np.concatenate([context, x[:, i:i + n]], axis=1)
        feed = {"input": chunk, "state": state}
        if "sr" in names:
            feed["sr"] = np.array(sr, np.int64)
        out, state = sess.run(["output", "stateN"], feed)
        assert out.shape == (batch, 1) and state.shape == (2, batch, 128)
        probs.append(out[:, 0])
        states.append(state)
        context = chunk[:, -c:]
    return np.array(probs), np.array(states)


@functools.lru_cache(maxsize=None)
def reference(name, sr):
    return stream(ort_session(model_path(name)), audio(sr), sr)


def check_decisions(got, exp, label):
    flips = np.flatnonzero((got > 0.5) != (exp > 0.5))
    assert not len(flips), f"{label}: speech/non-speech differs at chunks {flips[:10]}"


# --- the recording and the protocol, onnxruntime only (runs today) ---------

@pytest.mark.parametrize("name,sr", CASES, ids=[f"{f[:-5]}-{sr // 1000}k" for f, sr in CASES])
def test_reference_finds_the_utterances(name, sr):
    """The harness itself: streamed as above, onnxruntime hears speech inside
    every utterance and none well away from them (so the comparisons below
    compare real speech/non-speech decisions)."""
    probs, _ = reference(name, sr)
    p = probs[:, 0]
    t = (np.arange(len(p)) + 0.5) * CHUNK[sr] / sr        # chunk centres, s
    for a, b in utterances():
        inside = (t > a + 0.1) & (t < b - 0.1)
        assert (p[inside] > 0.5).mean() > 0.7, (a, b)
    far = np.ones(len(p), bool)
    for a, b in utterances():
        far &= (t < a - 0.15) | (t > b + 0.4)
    assert (p[far] > 0.5).mean() < 0.05
    # decisions near 0.5 would make the decision check below fragile
    assert np.abs(p - 0.5).min() > 10 * TOL


def test_sequence_reference_equals_streaming():
    """The sequence model computes what silero_vad.onnx computes streamed."""
    ref = ort_session(model_path(SEQUENCE))
    zeros = np.zeros((1, 1, 128), np.float32)
    p, _, _ = ref.run(None, {"input": frames(audio(16000), 16000), "h": zeros, "c": zeros})
    np.testing.assert_allclose(p, reference("silero_vad.onnx", 16000)[0][:, 0], atol=TOL)


# --- fastlstm against onnxruntime -------------------------------------------

@pytest.mark.parametrize("name,sr", CASES, ids=[f"{f[:-5]}-{sr // 1000}k" for f, sr in CASES])
def test_streamed_matches_onnxruntime(name, sr):
    exp_p, exp_s = reference(name, sr)
    sess = fastlstm_session(model_path(name))
    with _until_supported():
        got_p, got_s = stream(sess, audio(sr), sr)
    assert got_p.dtype == np.float32 and got_s.dtype == np.float32
    label = f"{name} at {sr} Hz"
    err = np.abs(got_p - exp_p)
    assert err.max() <= TOL, f"{label}: probability off by {err.max():.2e} at chunk {err.argmax()}"
    np.testing.assert_allclose(got_s[-1], exp_s[-1], atol=TOL, rtol=TOL,
                               err_msg=f"{label}: final stateN")
    serr = np.abs(got_s - exp_s).max(axis=(1, 2, 3))
    assert serr.max() <= 10 * TOL, f"{label}: stateN off by {serr.max():.2e} at chunk {serr.argmax()}"
    check_decisions(got_p, exp_p, label)


ALL = list(STREAMED) + [SEQUENCE]


@pytest.mark.parametrize("name", ALL, ids=[f[:-5] for f in ALL])
def test_inputs_and_outputs_as_onnxruntime(name):
    """Callers find `sr` (or its absence) through get_inputs(), as the example does."""
    ref = ort_session(model_path(name))
    sess = fastlstm_session(model_path(name))
    assert [(i.name, i.type) for i in sess.get_inputs()] == \
        [(i.name, i.type) for i in ref.get_inputs()]
    assert [o.name for o in sess.get_outputs()] == [o.name for o in ref.get_outputs()]


TWO_RATES = [f for f, rates in STREAMED.items() if len(rates) == 2]


@pytest.mark.parametrize("name", TWO_RATES, ids=[f[:-5] for f in TWO_RATES])
def test_one_session_both_rates(name):
    """One session, streams at 16, 8, then 16 kHz again (each from a fresh
    state): whatever is specialised or cached per `sr` must not leak."""
    sess = fastlstm_session(model_path(name))
    n = 40
    with _until_supported():
        for sr in (16000, 8000, 16000):
            got_p, got_s = stream(sess, audio(sr)[:n * CHUNK[sr]], sr)
            exp_p, exp_s = reference(name, sr)
            assert np.abs(got_p - exp_p[:n]).max() <= TOL, sr
            np.testing.assert_allclose(got_s[-1], exp_s[n - 1], atol=TOL, rtol=TOL)


BATCHED = [f for f in STREAMED if "openvino" not in f]    # openvino's batch is fixed at 1


@pytest.mark.parametrize("name", BATCHED, ids=[f[:-5] for f in BATCHED])
def test_streamed_batch_of_two(name):
    """Two streams in one batch (the recording and its second half first), as
    the wrapper runs a [batch, samples] input; 100 chunks."""
    x = audio(16000)[:100 * 512]
    xb = np.stack([x, np.roll(x, len(x) // 2)])
    exp_p, exp_s = stream(ort_session(model_path(name)), xb, 16000, batch=2)
    sess = fastlstm_session(model_path(name))
    with _until_supported():
        got_p, got_s = stream(sess, xb, 16000, batch=2)
    assert np.abs(got_p - exp_p).max() <= TOL
    np.testing.assert_allclose(got_s[-1], exp_s[-1], atol=TOL, rtol=TOL)
    check_decisions(got_p, exp_p, f"{name} batch 2")


def _sequence_run(sess, fr, h, c):
    return sess.run(["speech_probs", "hn", "cn"], {"input": fr, "h": h, "c": c})


def test_sequence_matches_onnxruntime():
    """The whole recording in one call, then in slices that carry h and c."""
    fr = frames(audio(16000), 16000)
    zeros = np.zeros((1, 1, 128), np.float32)
    exp_p, exp_h, exp_c = _sequence_run(ort_session(model_path(SEQUENCE)), fr, zeros, zeros)
    sess = fastlstm_session(model_path(SEQUENCE))
    with _until_supported():
        got_p, got_h, got_c = _sequence_run(sess, fr, zeros, zeros)
    assert got_p.shape == exp_p.shape == (len(fr),)
    err = np.abs(got_p - exp_p)
    assert err.max() <= TOL, f"probability off by {err.max():.2e} at frame {err.argmax()}"
    np.testing.assert_allclose(got_h, exp_h, atol=TOL, rtol=TOL, err_msg="hn")
    np.testing.assert_allclose(got_c, exp_c, atol=TOL, rtol=TOL, err_msg="cn")
    check_decisions(got_p, exp_p, SEQUENCE)

    # slices: uneven, one of a single frame; the state carried by the caller
    h, c, parts = zeros, zeros, []
    bounds = [0, 97, 98, 211, len(fr)]
    with _until_supported():
        for a, b in zip(bounds, bounds[1:]):
            p, h, c = _sequence_run(sess, np.ascontiguousarray(fr[a:b]), h, c)
            assert p.shape == (b - a,)
            parts.append(p)
    got = np.concatenate(parts)
    assert np.abs(got - exp_p).max() <= TOL
    np.testing.assert_allclose(h, exp_h, atol=TOL, rtol=TOL, err_msg="hn after slices")
    np.testing.assert_allclose(c, exp_c, atol=TOL, rtol=TOL, err_msg="cn after slices")
