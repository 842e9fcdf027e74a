"""The ASGI application: HTTP for whole runs, WebSocket for streams, metrics, health.

Endpoints
---------
``POST /v1/run``
    One whole run.  JSON body ``{"inputs": {name: nested list}, "outputs":
    [names] (optional)}`` answered with ``{"outputs": {name: nested list}}``;
    or a binary NumPy body (``Content-Type: application/x-npz``: an ``.npz``
    of the inputs by name; ``application/x-npy``: one ``.npy``, for a model
    with one input to feed) answered with an ``.npz`` of the outputs.  Bad
    input: 400 with ``{"error": ..., "type": ...}``.
``WS /v1/stream``
    A stream whose state lives on the server (a :class:`fastlstm.StreamPool`
    stream, batched with every other connection's chunks).  The server
    first sends ``{"type": "opened", "stream": id, "inputs": [...],
    "outputs": [...]}``.  Then each message is a chunk:

    - text ``{"type": "chunk", "data": nested list}`` (one input to feed) or
      ``{"type": "chunk", "inputs": {name: nested list}}``, optional ``"id"``
      echoed back, answered by text ``{"type": "result", "seq": n, "id": ...,
      "outputs": {name: nested list}}``;
    - binary: a ``.npy`` (one input) or ``.npz`` (by name), answered by a
      binary ``.npz`` of the outputs;
    - ``{"type": "close"}`` ends the stream (answered ``{"type": "closed"}``).

    A message that cannot be read, or a chunk the model refuses, is
    answered ``{"type": "error", "error": ..., "seq": n}``; the stream stays
    open and its state is as before that message.  The stream's state is
    freed when the client disconnects, closes, or sends nothing for
    ``idle_timeout`` seconds (then the server closes with code 1001).
``GET /metrics``
    Prometheus text: requests, latency histograms, batch sizes, open streams.
``GET /health``
    ``{"status": "ok", ...}``; 503 ``{"status": "shutting down"}`` while draining.
``GET /v1/model``
    Inputs and outputs (name, shape, type) and what a stream feeds.

Graceful shutdown (SIGTERM, SIGINT, ``Server.should_exit``): new requests
and connections are refused with 503 / close code 1001; every request
already accepted and every chunk already read is answered first; then
WebSockets are closed with 1001 and the pool is shut down.
"""
import asyncio
import io
import json
import time

import numpy as np

from ..errors import FastLSTMError
from .metrics import Metrics

NPZ = "application/x-npz"
NPY = "application/x-npy"


class ServerState:
    """What the app's handlers share: session, pool, metrics, drain bookkeeping."""

    def __init__(self, session, pool_options=None, idle_timeout=60.0, before_run=None):
        from ..pool import StreamPool
        self.session = session
        self.metrics = Metrics()
        self.idle_timeout = idle_timeout
        self.before_run = before_run     # a hook called before each HTTP run (tests)
        self.pool_error = None
        try:
            self.pool = StreamPool(session, **(pool_options or {}))
            self.pool.on_batch = self.metrics.batch
        except FastLSTMError as e:       # the model cannot be streamed: HTTP still works
            self.pool = None
            self.pool_error = str(e)
        self.input_types = {vi.name: vi for vi in session.get_inputs()}
        self.closing = False
        self._closing_event = None
        self.inflight = 0
        self.sockets = 0

    def closing_event(self):
        if self._closing_event is None:
            self._closing_event = asyncio.Event()
            if self.closing:
                self._closing_event.set()
        return self._closing_event

    async def drain(self, timeout=30.0):
        """Refuse new work, answer what was accepted, let the streams close."""
        self.closing = True
        self.closing_event().set()
        deadline = time.monotonic() + timeout
        while (self.inflight or self.sockets) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def shutdown(self):
        if self.pool is not None:
            self.pool.shutdown()


def _dtype(vi):
    from ..pool import _np_dtype
    return _np_dtype(vi.type) if vi is not None else None


def _from_json(state, name, value):
    vi = state.input_types.get(name)
    dt = _dtype(vi)
    if isinstance(value, dict) and "data" in value:       # {"data": flat, "shape": [...]}
        arr = np.asarray(value["data"], dtype=value.get("dtype") or dt)
        if "shape" in value:
            arr = arr.reshape(value["shape"])
        return arr
    try:
        return np.asarray(value, dtype=dt)
    except (TypeError, ValueError) as e:
        raise ValueError(f"input '{name}' cannot be read as {dt.__name__ if dt else 'an array'}: "
                         f"{e}") from None


def _to_json(arr):
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64).tolist()   # (float32 -> shortest float64 repr)
    return arr.tolist()


def _npz_bytes(named):
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in named.items()})
    return buf.getvalue()


def _read_binary(body, one_input):
    """Arrays of a binary body: an .npz by name, or one .npy for ``one_input``."""
    try:
        if body[:6] == b"\x93NUMPY":
            if one_input is None:
                raise ValueError("an .npy body feeds one input, and this model has "
                                 "several to feed: send an .npz of them by name")
            return {one_input: np.load(io.BytesIO(body), allow_pickle=False)}
        if body[:2] == b"PK":
            with np.load(io.BytesIO(body), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"the body is not a readable .npy or .npz: {e}") from None
    raise ValueError("the body is neither an .npy nor an .npz file")


def create_app(model, pool_options=None, idle_timeout=60.0, session_options=None,
               before_run=None):
    """The Starlette app serving ``model`` (a path, bytes or an InferenceSession).

    ``pool_options``: keyword arguments of :class:`fastlstm.StreamPool` for the
    streams (``context``, ``constants``, ``state``, ``max_batch``,
    ``max_wait_us``...).  ``app.state.fastlstm`` is the :class:`ServerState`.
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from ..session import InferenceSession
    session = model if isinstance(model, InferenceSession) else \
        InferenceSession(model, session_options)
    st = ServerState(session, pool_options, idle_timeout, before_run)
    data_inputs = [vi.name for vi in session.get_inputs()]
    one_input = data_inputs[0] if len(data_inputs) == 1 else None
    stream_one = st.pool.data_inputs[0] if st.pool is not None and \
        len(st.pool.data_inputs) == 1 else None

    def error(status, message, kind="InvalidRequest"):
        return JSONResponse({"error": message, "type": kind}, status_code=status)

    async def health(request):
        if st.closing:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return JSONResponse({"status": "ok", "open_streams": st.metrics.open_streams,
                             "streaming": st.pool is not None})

    async def metrics(request):
        return PlainTextResponse(st.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def model_info(request):
        def args(vis):
            return [{"name": v.name, "shape": v.shape, "type": v.type} for v in vis]
        doc = {"inputs": args(session.get_inputs()), "outputs": args(session.get_outputs())}
        if st.pool is not None:
            doc["stream"] = {"inputs": st.pool.data_inputs, "outputs": st.pool.outputs,
                             "state": st.pool.mode, "context": st.pool.context}
        else:
            doc["stream"] = {"error": st.pool_error}
        return JSONResponse(doc)

    async def run(request: Request):
        if st.closing:
            return error(503, "the server is shutting down")
        st.inflight += 1
        t0 = time.perf_counter()
        status = "error"
        try:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            body = await request.body()
            binary = ctype != "application/json"
            try:
                if binary:
                    feed = _read_binary(body, one_input)
                    outputs = None
                    q = request.query_params.get("outputs")
                    if q:
                        outputs = q.split(",")
                else:
                    doc = json.loads(body)
                    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict):
                        raise ValueError('the JSON body must be {"inputs": {name: array}, '
                                         '"outputs": [names] (optional)}')
                    feed = {k: _from_json(st, k, v) for k, v in doc["inputs"].items()}
                    outputs = doc.get("outputs")
            except (ValueError, UnicodeDecodeError) as e:
                return error(400, str(e))
            names = outputs or [vi.name for vi in session.get_outputs()]

            def work():
                if st.before_run is not None:
                    st.before_run()
                return session.run(outputs, feed)
            import anyio
            try:
                got = await anyio.to_thread.run_sync(work)
            except FastLSTMError as e:
                return error(400, str(e), type(e).__name__)
            status = "ok"
            result = dict(zip(names, got))
            wants_npz = binary or NPZ in request.headers.get("accept", "")
            if wants_npz:
                return Response(_npz_bytes(result), media_type=NPZ)
            return JSONResponse({"outputs": {k: _to_json(v) for k, v in result.items()}})
        finally:
            st.inflight -= 1
            st.metrics.request("http", status, time.perf_counter() - t0)

    async def stream(ws: WebSocket):
        await ws.accept()
        if st.closing:
            await ws.close(1001, "the server is shutting down")
            return
        if st.pool is None:
            await ws.send_json({"type": "error", "error": f"this model cannot be streamed: "
                                                          f"{st.pool_error}"})
            await ws.close(1003)
            return
        pool = st.pool
        sid = pool.open()
        st.sockets += 1
        st.metrics.stream_opened()
        closing = st.closing_event()
        seq = 0
        reason = None
        try:
            await ws.send_json({"type": "opened", "stream": sid, "inputs": pool.data_inputs,
                                "outputs": pool.outputs})
            while True:
                recv = asyncio.ensure_future(ws.receive())
                stop = asyncio.ensure_future(closing.wait())
                done, _ = await asyncio.wait({recv, stop}, timeout=st.idle_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if recv not in done:
                    recv.cancel()
                    reason = "the server is shutting down" if st.closing else \
                        f"idle for {st.idle_timeout:g} s: stream closed"
                    break
                msg = recv.result()
                if msg["type"] == "websocket.disconnect":
                    return
                reply = await _chunk(msg, seq, sid)
                if reply is _CLOSE:
                    await ws.send_json({"type": "closed", "stream": sid})
                    reason = "closed by the client"
                    break
                seq += 1
                if isinstance(reply, bytes):
                    await ws.send_bytes(reply)
                else:
                    await ws.send_text(json.dumps(reply))
                if st.closing:
                    reason = "the server is shutting down"
                    break
            await ws.close(1000 if reason == "closed by the client" else 1001, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass            # the client went away mid-stream: its state is freed below
        finally:
            pool.close(sid)
            st.sockets -= 1
            st.metrics.stream_closed()

    async def _chunk(msg, seq, sid):
        """The reply to one message: a dict (sent as JSON), bytes, or _CLOSE."""
        t0 = time.perf_counter()
        ident = None
        binary = msg.get("bytes") is not None
        try:
            if binary:
                chunk = _read_binary(msg["bytes"], stream_one)
                if stream_one is not None:
                    chunk = chunk.get(stream_one, chunk)
                    if isinstance(chunk, dict) and len(chunk) == 1:
                        chunk = next(iter(chunk.values()))
            else:
                try:
                    doc = json.loads(msg.get("text") or "")
                except ValueError as e:
                    raise ValueError(f"the message is not JSON: {e}") from None
                if not isinstance(doc, dict):
                    raise ValueError('a text message must be a JSON object such as '
                                     '{"type": "chunk", "data": [...]}')
                ident = doc.get("id")
                kind = doc.get("type", "chunk")
                if kind == "close":
                    return _CLOSE
                if kind == "ping":
                    return {"type": "pong", "id": ident}
                if kind != "chunk":
                    raise ValueError(f"unknown message type {kind!r}: chunk, close or ping")
                if "inputs" in doc:
                    if not isinstance(doc["inputs"], dict):
                        raise ValueError('"inputs" must be an object of name -> array')
                    chunk = {k: _from_json(st, k, v) for k, v in doc["inputs"].items()}
                elif "data" in doc:
                    if stream_one is None:
                        raise ValueError(f'this model\'s chunks feed {st.pool.data_inputs}: '
                                         f'send "inputs": {{name: array}}')
                    chunk = _from_json(st, stream_one, doc["data"])
                else:
                    raise ValueError('a chunk needs "data" (an array) or "inputs"')
        except ValueError as e:
            st.metrics.request("chunk", "bad_message")
            return {"type": "error", "error": str(e), "seq": seq, "id": ident}
        try:
            result = await st.pool.apush(sid, chunk)
        except FastLSTMError as e:
            st.metrics.request("chunk", "error", time.perf_counter() - t0)
            return {"type": "error", "error": str(e), "kind": type(e).__name__, "seq": seq,
                    "id": ident}
        st.metrics.request("chunk", "ok", time.perf_counter() - t0)
        if binary:
            return _npz_bytes(result)
        return {"type": "result", "seq": seq, "id": ident,
                "outputs": {k: _to_json(v) for k, v in result.items()}}

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            await st.drain()
            st.shutdown()

    app = Starlette(routes=[Route("/health", health), Route("/metrics", metrics),
                            Route("/v1/model", model_info),
                            Route("/v1/run", run, methods=["POST"]),
                            WebSocketRoute("/v1/stream", stream)],
                    lifespan=lifespan)
    app.state.fastlstm = st
    return app


_CLOSE = object()
