"""fastlstm.integrations.ray on a local Ray instance started here: two replicas,
Ray's request batching, streams whose state the client carries (results equal
each stream run alone), a refused chunk answered alone, and HTTP through Ray
Serve's proxy."""
import os
import socket

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fastlstm[ray]')")
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed "
                                                "(pip install 'fastlstm[ray]')")

import fastlstm  # noqa: E402
from fastlstm.integrations.ray import build_app  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SILERO = os.path.join(HERE, "models", "silero", "silero_vad.onnx")
SR = np.array(16000, np.int64)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_app():
    port = _free_port()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except Exception as e:          # (only if Ray cannot start on this machine)
        pytest.skip(f"a local Ray instance cannot start here: {type(e).__name__}: {e}")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(SILERO, num_replicas=2, max_batch=16, batch_wait_timeout_s=0.005,
                        pool_options={"context": {"input": 64}, "constants": {"sr": SR}})
        handle = serve.run(app, name="vad", route_prefix="/vad")
        yield handle, f"http://127.0.0.1:{port}/vad"
    finally:
        serve.shutdown()
        ray.shutdown()


def _alone(sess, chunks):
    state = np.zeros((2, 1, 128), np.float32)
    tail = np.zeros((1, 64), np.float32)
    out = []
    for c in chunks:
        x = np.concatenate([tail, c[None]], axis=1)
        p, state = sess.run(["output", "stateN"], {"input": x, "state": state, "sr": SR})
        tail = x[:, -64:]
        out.append(float(p[0, 0]))
    return out


def test_client_carried_streams_on_replicas(ray_app):
    handle, url = ray_app
    rng = np.random.default_rng(0)
    S, T = 12, 3
    chunks = [[(rng.standard_normal(512) * 0.3).astype(np.float32) for _ in range(T)]
              for _ in range(S)]
    states = [None] * S
    got = [[] for _ in range(S)]
    for t in range(T):          # every stream's chunk t in flight at once: batched
        calls = [handle.remote({"chunk": chunks[s][t], "state": states[s]}) for s in range(S)]
        for s, c in enumerate(calls):
            r = c.result(timeout_s=120)
            got[s].append(float(r["outputs"]["output"][0]))
            states[s] = r["state"]
    sess = fastlstm.InferenceSession(SILERO)
    for s in range(S):
        np.testing.assert_allclose(got[s], _alone(sess, chunks[s]), atol=1e-6)
    # a refused chunk fails alone
    calls = [handle.remote({"chunk": chunks[0][0], "state": states[0]}),
             handle.remote({"chunk": np.zeros(5, np.float32), "state": states[1]})]
    ok, bad = [c.result(timeout_s=120) for c in calls]
    assert "outputs" in ok and bad["type"] == "InvalidInput"
    # HTTP through Ray Serve's proxy, state as JSON
    import httpx
    r = httpx.post(url, json={"chunk": chunks[0][0].tolist(), "state": None}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(body["outputs"]["output"][0], got[0][0], atol=1e-6)
    r = httpx.post(url, json={"chunk": chunks[0][1].tolist(), "state": body["state"]},
                   timeout=120)
    np.testing.assert_allclose(r.json()["outputs"]["output"][0], got[0][1], atol=1e-6)
    r = httpx.post(url, json={"chunk": [0.0] * 5, "state": None}, timeout=120)
    assert r.status_code == 400 and r.json()["type"] == "InvalidInput"
