"""A network server for a model: ``fastlstm serve MODEL --port N``.

HTTP for whole runs (JSON or a binary NumPy body), WebSocket for streams
(the state on the server, in a :class:`fastlstm.StreamPool` shared by every
connection, so chunks of different clients run batched), Prometheus
metrics, health, graceful shutdown.  Needs the ``[serve]`` extra
(Starlette, uvicorn, websockets); see ``fastlstm/server/app.py`` for the
protocol.

    from fastlstm.server import create_app, serve
    app = create_app("model.onnx")          # any ASGI server runs it
    serve("model.onnx", port=8000)          # or uvicorn, with graceful shutdown
"""
from .app import ServerState, create_app  # noqa: F401

__all__ = ["create_app", "serve", "make_server", "ServerState", "cli_main", "add_arguments"]


def _uvicorn():
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("fastlstm: error: serving needs the serve extra: "
                         "pip install 'fastlstm[serve]'") from None
    return uvicorn


def make_server(app, host="127.0.0.1", port=8000, log_level="info", graceful_seconds=30.0):
    """A uvicorn server for ``app`` that drains before it shuts down: requests
    and chunks already accepted are answered, then streams closed (1001)."""
    uvicorn = _uvicorn()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            await app.state.fastlstm.drain(graceful_seconds)
            await super().shutdown(sockets)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=graceful_seconds, ws="auto")
    return Server(config)


def serve(model, host="127.0.0.1", port=8000, pool_options=None, idle_timeout=60.0,
          log_level="info", session_options=None):
    """Serve ``model`` until SIGINT/SIGTERM (then shut down gracefully)."""
    _uvicorn()
    app = create_app(model, pool_options=pool_options, idle_timeout=idle_timeout,
                     session_options=session_options)
    make_server(app, host, port, log_level).run()


def add_arguments(p):
    """The ``fastlstm serve`` options, on argparse parser ``p``."""
    p.add_argument("model", help="an ONNX or .fastlstm model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="threads of each run")
    p.add_argument("--max-batch", type=int, default=64, help="most chunks in one batch")
    p.add_argument("--max-wait-us", type=float, default=1000,
                   help="how long a chunk waits for others to batch with")
    p.add_argument("--idle-timeout", type=float, default=60.0,
                   help="seconds without a message after which a stream is closed")
    p.add_argument("--state", action="append", default=[], metavar="INPUT=OUTPUT",
                   help="a stream's state pair (default: found by name)")
    p.add_argument("--context", action="append", default=[], metavar="INPUT=N",
                   help="keep the last N entries of INPUT per stream (Silero: input=64)")
    p.add_argument("--constant", action="append", default=[], metavar="INPUT=VALUE",
                   help="feed INPUT this scalar in every stream call (Silero: sr=16000)")
    p.add_argument("--log-level", default="info")


def _pairs(items, what):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"fastlstm: error: --{what} takes NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def cli_main(args):
    """``fastlstm serve``: parse the options into a pool's and run the server."""
    import numpy as np

    from ..session import SessionOptions
    opts = {"max_batch": args.max_batch, "max_wait_us": args.max_wait_us}
    states = _pairs(args.state, "state")
    if states:
        opts["state"] = states
    try:
        ctx = {k: int(v) for k, v in _pairs(args.context, "context").items()}
    except ValueError:
        raise SystemExit("fastlstm: error: --context takes INPUT=N with N an integer") from None
    if ctx:
        opts["context"] = ctx
    consts = {}
    for k, v in _pairs(args.constant, "constant").items():
        try:
            consts[k] = np.array(int(v)) if v.lstrip("-").isdigit() else np.array(float(v))
        except ValueError:
            raise SystemExit(f"fastlstm: error: --constant {k}={v}: not a number") from None
    if consts:
        opts["constants"] = consts
    so = SessionOptions()
    so.intra_op_num_threads = args.threads
    serve(args.model, args.host, args.port, pool_options=opts, idle_timeout=args.idle_timeout,
          log_level=args.log_level, session_options=so)
    return 0
