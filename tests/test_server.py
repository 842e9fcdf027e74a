"""fastlstm.server through real sockets on localhost: HTTP runs (JSON and NumPy
bodies), WebSocket streams (concurrent clients, a client that disconnects
mid-stream, malformed messages, idle timeout), metrics, health and a
graceful shutdown that answers the request in flight."""
import contextlib
import io
import json
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("websockets", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx", reason="the test extra (httpx) is not installed")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm.server import create_app, make_server  # noqa: E402
from helpers import SILERO, SR  # noqa: E402

POOL = {"context": {"input": 64}, "constants": {"sr": SR}, "max_wait_us": 500}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A server on a free localhost port, in a thread."""

    def __init__(self, model, **kw):
        self.app = create_app(model, **kw)
        self.port = _free_port()
        self.server = make_server(self.app, port=self.port, log_level="warning",
                                  graceful_seconds=10)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/v1/stream"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def silero_server():
    srv = Running(SILERO, pool_options=POOL)
    yield srv
    srv.stop()


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


def _chunks(seed, n=4):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(512) * 0.3).astype(np.float32) for _ in range(n)]


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _wait_for(cond, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def test_http_json_npz_npy_and_errors(silero_server, silero):
    x = (np.random.default_rng(0).standard_normal((3, 576)) * 0.3).astype(np.float32)
    state = np.zeros((2, 3, 128), np.float32)
    want = silero.run(None, {"input": x, "state": state, "sr": SR})
    with httpx.Client(base_url=silero_server.url, timeout=60) as c:
        r = c.post("/v1/run", json={"inputs": {"input": x.tolist(), "state": state.tolist(),
                                               "sr": 16000}, "outputs": ["output"]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"]["output"]), want[0], atol=1e-6)
        buf = io.BytesIO()
        np.savez(buf, input=x, state=state, sr=SR)
        r = c.post("/v1/run", content=buf.getvalue(),
                   headers={"content-type": "application/x-npz"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
        with np.load(io.BytesIO(r.content)) as z:
            np.testing.assert_array_equal(z["output"], want[0])
            np.testing.assert_array_equal(z["stateN"], want[1])
        # errors: 400 with the reason, server unaffected
        r = c.post("/v1/run", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()
        r = c.post("/v1/run", json={"inputs": {"input": x.tolist()}})
        assert r.status_code == 400 and r.json()["type"] == "InvalidInput"
        assert "state" in r.json()["error"]
        r = c.post("/v1/run", content=_npy(x), headers={"content-type": "application/x-npy"})
        assert r.status_code == 400 and "npz" in r.json()["error"]
        r = c.post("/v1/run", content=b"garbage", headers={"content-type": "application/x-npz"})
        assert r.status_code == 400
        assert c.get("/health").json()["status"] == "ok"
        info = c.get("/v1/model").json()
        assert info["stream"]["inputs"] == ["input"] and info["stream"]["state"] == "external"


def test_http_npy_body_single_input_model():
    sess_path = fastlstm.example_model("lstm_forward")
    srv = Running(sess_path)
    try:
        x = np.random.default_rng(1).standard_normal((4, 2, 64)).astype(np.float32)
        want = fastlstm.InferenceSession(sess_path).run(
            None, {"X": x, "initial_h": np.zeros((1, 2, 128), np.float32),
                   "initial_c": np.zeros((1, 2, 128), np.float32)})
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            buf = io.BytesIO()
            np.savez(buf, X=x, initial_h=np.zeros((1, 2, 128), np.float32),
                     initial_c=np.zeros((1, 2, 128), np.float32))
            r = c.post("/v1/run?outputs=Y_h", content=buf.getvalue(),
                       headers={"content-type": "application/x-npz"})
            assert r.status_code == 200, r.text
            with np.load(io.BytesIO(r.content)) as z:
                assert z.files == ["Y_h"]
                np.testing.assert_array_equal(z["Y_h"], want[1])
        # a stream over the model's inner state, one .npy chunk per message
        with connect(srv.ws) as ws:
            hello = json.loads(ws.recv())
            assert hello["type"] == "opened" and hello["inputs"] == ["X"]
            st = fastlstm.InferenceSession(sess_path).stream()
            for t in range(3):
                ws.send(_npy(x[t:t + 1, 0]))
                with np.load(io.BytesIO(ws.recv())) as z:
                    got = z["Y_h"]
                y, yh, yc = st.run(None, {"X": x[t:t + 1, :1]})
                np.testing.assert_allclose(got, yh[:, 0], atol=1e-6)
    finally:
        srv.stop()


def _stream(url, chunks, binary=False, ids=False):
    out = []
    with connect(url) as ws:
        hello = json.loads(ws.recv())
        assert hello["type"] == "opened"
        for k, c in enumerate(chunks):
            if binary:
                ws.send(_npy(c))
                with np.load(io.BytesIO(ws.recv())) as z:
                    out.append(float(z["output"][0]))
            else:
                ws.send(json.dumps({"type": "chunk", "data": c.tolist(), "id": k}))
                msg = json.loads(ws.recv())
                assert msg["type"] == "result" and msg["seq"] == k and msg["id"] == k, msg
                out.append(msg["outputs"]["output"][0])
        ws.send(json.dumps({"type": "close"}))
        assert json.loads(ws.recv())["type"] == "closed"
    return out


def test_concurrent_clients_equal_streams_alone(silero_server, silero):
    chunks = {k: _chunks(k) for k in range(8)}
    got = {}

    def client(k):
        got[k] = _stream(silero_server.ws, chunks[k], binary=k % 2 == 1)
    threads = [threading.Thread(target=client, args=(k,)) for k in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for k in chunks:
        np.testing.assert_allclose(got[k], _alone(silero, chunks[k]), atol=1e-6)


def test_malformed_messages_answered_and_stream_intact(silero_server, silero):
    chunks = _chunks(10, 3)
    other = _chunks(11, 3)
    with connect(silero_server.ws) as ws, connect(silero_server.ws) as ws2:
        json.loads(ws.recv()), json.loads(ws2.recv())
        ws.send(json.dumps({"type": "chunk", "data": chunks[0].tolist()}))
        first = json.loads(ws.recv())["outputs"]["output"][0]
        ws2.send(json.dumps({"type": "chunk", "data": other[0].tolist()}))
        json.loads(ws2.recv())
        bad = ["not json at all", json.dumps([1, 2, 3]), json.dumps({"type": "explode"}),
               json.dumps({"type": "chunk"}), json.dumps({"type": "chunk", "data": "abc"}),
               json.dumps({"type": "chunk", "data": [[1.0] * 512]}),      # rank 2
               json.dumps({"type": "chunk", "data": [1.0] * 10}),         # model refuses
               b"\x00\x01binary garbage"]
        for m in bad:
            ws.send(m)
            msg = json.loads(ws.recv())
            assert msg["type"] == "error" and msg["error"], msg
        # the stream goes on from its last good chunk; the other client's too
        ws.send(json.dumps({"type": "chunk", "data": chunks[1].tolist()}))
        second = json.loads(ws.recv())["outputs"]["output"][0]
        np.testing.assert_allclose([first, second], _alone(silero, chunks[:2]), atol=1e-6)
        ws2.send(json.dumps({"type": "chunk", "data": other[1].tolist()}))
        got2 = json.loads(ws2.recv())["outputs"]["output"][0]
        np.testing.assert_allclose(got2, _alone(silero, other[:2])[1], atol=1e-6)
    text = httpx.get(silero_server.url + "/metrics").text
    assert 'fastlstm_requests_total{kind="chunk",status="bad_message"}' in text


def test_client_disconnects_mid_stream(silero_server, silero):
    st = silero_server.app.state.fastlstm
    _wait_for(lambda: st.metrics.open_streams == 0, "earlier streams to close")
    with contextlib.suppress(Exception), connect(silero_server.ws) as ws:
        json.loads(ws.recv())
        c = _chunks(20, 2)
        ws.send(json.dumps({"type": "chunk", "data": c[0].tolist()}))
        ws.send(json.dumps({"type": "chunk", "data": c[1].tolist()}))  # in flight at the drop
        ws.socket.shutdown(socket.SHUT_RDWR)    # gone without a close frame
        ws.socket.close()
    _wait_for(lambda: st.metrics.open_streams == 0 and len(st.pool) == 0,
              "the dropped client's stream to be freed")
    # the server goes on serving others
    chunks = _chunks(21, 2)
    np.testing.assert_allclose(_stream(silero_server.ws, chunks), _alone(silero, chunks),
                               atol=1e-6)


def test_idle_stream_closed_and_freed():
    srv = Running(SILERO, pool_options=POOL, idle_timeout=0.2)
    try:
        with connect(srv.ws) as ws:
            json.loads(ws.recv())
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=30)
            assert e.value.rcvd.code == 1001 and "idle" in e.value.rcvd.reason
        st = srv.app.state.fastlstm
        _wait_for(lambda: len(st.pool) == 0, "the idle stream to be freed")
    finally:
        srv.stop()


def test_metrics_and_health(silero_server):
    _stream(silero_server.ws, _chunks(30, 2))
    with httpx.Client(base_url=silero_server.url) as c:
        h = c.get("/health")
        assert h.status_code == 200 and h.json()["status"] == "ok"
        m = c.get("/metrics")
        assert m.headers["content-type"].startswith("text/plain")
        text = m.text
    for family in ("fastlstm_requests_total", "fastlstm_request_latency_seconds_bucket",
                   "fastlstm_batch_size_bucket", "fastlstm_open_streams"):
        assert family in text
    assert 'fastlstm_requests_total{kind="chunk",status="ok"}' in text
    assert 'fastlstm_batch_size_bucket{le="+Inf"}' in text
    for line in text.splitlines():      # every sample line: name{labels} value
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)


def test_graceful_shutdown_answers_request_in_flight(silero):
    entered, release = threading.Event(), threading.Event()

    def hold():
        entered.set()
        release.wait(30)
    srv = Running(SILERO, pool_options=POOL, before_run=hold)
    x = np.zeros((1, 576), np.float32)
    result = {}
    ws = connect(srv.ws).__enter__()
    json.loads(ws.recv())

    def request():
        result["r"] = httpx.post(srv.url + "/v1/run", timeout=60, json={
            "inputs": {"input": x.tolist(), "state": np.zeros((2, 1, 128)).tolist(),
                       "sr": 16000}})
    t = threading.Thread(target=request)
    t.start()
    assert entered.wait(30)
    srv.server.should_exit = True          # as SIGTERM does
    st = srv.app.state.fastlstm
    _wait_for(lambda: st.closing, "the server to start draining")
    assert httpx.get(srv.url + "/health").status_code == 503
    with pytest.raises(ConnectionClosed) as e:   # open streams are closed, politely
        ws.recv(timeout=30)
    assert e.value.rcvd.code == 1001
    release.set()
    t.join(30)
    assert result["r"].status_code == 200       # the request in flight was answered
    want = silero.run(["output"], {"input": x, "state": np.zeros((2, 1, 128), np.float32),
                                   "sr": SR})[0]
    np.testing.assert_allclose(result["r"].json()["outputs"]["output"], want, atol=1e-6)
    srv.thread.join(30)
    assert not srv.thread.is_alive()
