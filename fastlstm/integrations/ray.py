"""Serve a model on Ray Serve: replicas, Ray's request batching, streams whose
state the client carries.

    from ray import serve
    from fastlstm.integrations.ray import build_app

    app = build_app("silero_vad.onnx", num_replicas=4,
                    pool_options={"context": {"input": 64},
                                  "constants": {"sr": np.array(16000)}})
    handle = serve.run(app)
    r = handle.remote({"chunk": samples, "state": None}).result()
    r = handle.remote({"chunk": more, "state": r["state"]}).result()   # next chunk

Design: the client carries the stream's state
---------------------------------------------
Each request holds the chunk *and* the stream's state as the previous reply
returned it (for Silero VAD: ``state`` [2, 128] float32 = 1 KiB and 64
samples of context = 256 B, beside 2 KiB of new samples).  Any replica can
serve any request, so:

- Ray Serve routes, batches and autoscales requests as it does any stateless
  model: ``@serve.batch`` coalesces requests from all clients into one
  :class:`fastlstm.StreamPool` batch (one batched call of the session);
- a replica that dies, is scaled down or is redeployed loses nothing; the
  client resends the same request (it is idempotent) and another replica
  gives the same answer;
- no session affinity is needed, which Ray Serve does not offer for HTTP
  (pinning a stream to a replica would mean a custom router, state lost
  with the replica, and load that cannot be rebalanced while streams live).

The cost is 1.25 KiB more per request each way, small beside the request's
own 2 KiB of audio and Ray's own per-request overhead.  For models whose
state is large (a stack of wide LSTMs: megabytes), pinning would win; then
run ``fastlstm serve`` (state on the server, WebSocket) behind a load
balancer with sticky connections instead.

Requests
--------
Through a handle (``handle.remote(request)``) or HTTP POST of JSON to the
route: ``{"chunk": array (or {name: array} for several inputs), "state":
what the last reply returned, or null to start}``.  The reply is
``{"outputs": {name: array}, "state": {name: array}}`` (numpy arrays through
a handle, nested lists over HTTP).  A chunk the model refuses is answered
``{"error": ..., "type": ...}`` (HTTP status 400) without touching any other
request of its batch.
"""
import asyncio

import numpy as np

from ..errors import FastLSTMError, InvalidInput

__all__ = ["FastLSTMDeployment", "build_app"]


def _as_arrays(obj, dtype=None):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return {k: _as_arrays(v) for k, v in obj.items()}
    return np.asarray(obj, dtype=np.float32 if dtype is None and isinstance(obj, list)
                      else dtype)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.astype(np.float64).tolist() if obj.dtype.kind == "f" else obj.tolist()
    return obj


class FastLSTMDeployment:
    """One replica: a session, a StreamPool used as the batching engine, and
    Ray Serve's ``@serve.batch`` in front.  (Wrapped by ``serve.deployment`` in
    :func:`build_app`; usable alone for tests.)"""

    def __init__(self, model, pool_options=None, max_batch=64, batch_wait_timeout_s=0.002,
                 threads=1):
        import fastlstm
        so = fastlstm.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = fastlstm.InferenceSession(model, so)
        opts = dict(pool_options or {})
        opts.setdefault("max_batch", max_batch)
        opts.setdefault("max_wait_us", 500)  # (Ray's batch arrives at once: little wait)
        self.pool = fastlstm.StreamPool(self.session, **opts)
        try:
            self.step.set_max_batch_size(max_batch)
            self.step.set_batch_wait_timeout_s(batch_wait_timeout_s)
        except AttributeError:      # (older Ray: the decorator's defaults stand)
            pass

    def _one(self, request):
        if not isinstance(request, dict) or "chunk" not in request:
            raise InvalidInput('a request is {"chunk": array, "state": state or null}')
        chunk = request["chunk"]
        if isinstance(chunk, list):
            name = self.pool.data_inputs[0] if len(self.pool.data_inputs) == 1 else None
            from ..pool import _np_dtype
            vi = {v.name: v for v in self.session.get_inputs()}.get(name)
            chunk = np.asarray(chunk, dtype=_np_dtype(vi.type) if vi else None)
        elif isinstance(chunk, dict):
            chunk = _as_arrays(chunk)
        state = request.get("state")
        return chunk, (_as_arrays(state) if state is not None else None)

    async def _batch(self, requests):
        """Run requests of different streams as one pool batch: each gets a
        stream for the call, with the state it carried."""
        pool = self.pool
        out = [None] * len(requests)
        sids = {}
        try:
            chunks = {}
            for k, req in enumerate(requests):      # every state in place first,
                try:
                    chunk, state = self._one(req)
                    sid = sids[k] = pool.open()
                    if state:
                        pool.set_state(sid, state)
                    chunks[k] = chunk
                except FastLSTMError as e:
                    out[k] = {"error": str(e), "type": type(e).__name__}
            for k, chunk in chunks.items():         # then all queued at once: one batch
                out[k] = pool.asubmit(sids[k], chunk)
            for k in range(len(out)):
                if not isinstance(out[k], asyncio.Future):
                    continue
                try:
                    res = await out[k]
                except FastLSTMError as e:
                    out[k] = {"error": str(e), "type": type(e).__name__}
                    continue
                out[k] = {"outputs": res, "state": pool.get_state(sids[k])}
        finally:
            for sid in sids.values():
                pool.close(sid)
        return out

    def _batch_decorated():
        from ray import serve

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
        async def step(self, requests):
            return await self._batch(requests)
        return step

    try:
        step = _batch_decorated()
    except ImportError:             # Ray not installed: the class still imports
        async def step(self, requests):
            return (await self._batch([requests]))[0]
    del _batch_decorated

    async def __call__(self, request):
        """A handle call (a dict with numpy arrays) or an HTTP request (JSON)."""
        if hasattr(request, "json") and callable(request.json):
            try:
                body = await request.json()
            except Exception as e:
                return _http_error(f"the body is not JSON: {e}")
            try:
                reply = await self.step(body)
            except FastLSTMError as e:
                return _http_error(str(e), type(e).__name__)
            if "error" in reply:
                return _http_error(reply["error"], reply["type"])
            return _jsonable(reply)
        return await self.step(request)


def _http_error(message, kind="InvalidRequest"):
    from starlette.responses import JSONResponse
    return JSONResponse({"error": message, "type": kind}, status_code=400)


def build_app(model, num_replicas=1, max_batch=64, batch_wait_timeout_s=0.002,
              pool_options=None, threads=1, ray_actor_options=None, name="fastlstm"):
    """A Ray Serve application serving ``model`` (a path or bytes).

    A path is read here and the bytes shipped to the replicas through Ray's
    object store, so replicas on other nodes need no shared file system.
    ``num_replicas`` may be ``"auto"`` (Ray's autoscaling).  Each replica
    uses ``threads`` threads per run and asks Ray for as many CPUs.
    """
    from ray import serve
    if isinstance(model, (str, bytes)) and not isinstance(model, bytes):
        with open(model, "rb") as f:
            model = f.read()
    opts = {"num_cpus": threads}
    opts.update(ray_actor_options or {})
    dep = serve.deployment(FastLSTMDeployment, name=name, num_replicas=num_replicas,
                           ray_actor_options=opts,
                           max_ongoing_requests=max(2 * max_batch, 100))
    return dep.bind(model, pool_options, max_batch, batch_wait_timeout_s, threads)
