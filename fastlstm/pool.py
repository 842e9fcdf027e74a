"""A pool of many independent streams over one session, batched across streams.

    pool = fastlstm.StreamPool(sess, constants={"sr": np.array(16000)},
                               context={"input": 64})          # Silero VAD
    sid = pool.open()
    out = pool.push(sid, samples)        # {"output": [1]}: this stream's result
    out = await pool.apush(sid, samples) # the same from asyncio
    pool.close(sid)

Every stream keeps its own recurrent state and context in the pool; chunks
pushed by different streams within ``max_wait_us`` of each other run as one
batched call of the session, on the pool's worker thread, or, with
``worker=False``, on the thread that calls ``pool.run_ready()`` (a server
whose one thread reads the chunks and runs the batches: on one core no
hand-over between threads; see ``run_ready``).  Each result equals what running that stream
alone gives (the kernels compute every batch row with the same operations, so
in practice bitwise).

Where a stream's state lives
----------------------------
*external*: the model takes its state as an input and returns the next state
as an output (Silero's ``state`` -> ``stateN``, a sequence export's ``h``/``c``
-> ``hn``/``cn``).  Pairs are found by name (``x`` -> ``xN``, ``xn``,
``x_out``, ``x_new``, ``x_next``; ``initial_h`` -> ``Y_h``) and rank when that
is unambiguous, else declared: ``state={"state": "stateN"}``.

*internal*: the model's recurrent layers take their initial state from inputs
that feed only them (or from nothing); the pool carries each layer's h/c as
:class:`fastlstm.Stream` does (``state="internal"``; the default when no pair
is found and the model has LSTM/GRU/RNN nodes, all forward).

*none*: ``state={}``, streams carry only context.

The state of every stream sits in one preallocated array per state tensor,
its batch axis indexed by the stream's slot: a batch gathers its rows and
scatters the new state back, only after the batched call succeeded, so a
failing call moves no state.

What a chunk costs outside the model's kernels runs in C
(``fastlstm._poolcore``): ``submit`` of a chunk of the last shape and dtype
found valid, the batch's formation, copying its chunks behind their context
and its state rows (one ``memcpy`` per row, the next rows' cache lines asked
for ahead), splitting the outputs into each stream's result, answering the
futures.  Arrays those loops cannot copy row by row (a non-contiguous chunk,
context along another axis than the chunk's first) take the numpy path
(``np.take``, indexed assignment), with the same results.  Measured on the
2-core VM against the Python version (interleaved runs, medians; Silero, CPU
us per chunk): submit + take + gather + scatter + finish in
``benchmarks/stream_capacity.py --breakdown`` 8.2 -> 2.6 at batch 128 (6.9 ->
3.5 at 64, 6.4 -> 3.5 at 256); at 1024 streams in the capacity benchmark's
trial, everything but the graph (the load generator included) 8.4 -> 5.4.

Batch sizes are rounded up to a few buckets (1, 2, 4, 8, then multiples of 4,
8, 16, 32 as batches grow; see ``_bucket``) with rows of a reserved slot that
holds the initial state, so the session sees few distinct input signatures
and each runs specialised (``fastlstm.specialize`` keeps 32).
"""
import asyncio
import re
import sys
import threading
import time
from collections import deque

import numpy as np

from .errors import ExtensionNotBuilt, FastLSTMError, InvalidInput
from .plan import RunContext

try:
    from . import _poolcore as _core
except ImportError as _e:  # pragma: no cover - only on a broken install
    raise ExtensionNotBuilt(
        "fastlstm's compiled extension fastlstm._poolcore is not built: install with "
        "'pip install .' or 'pip install -e .' (it needs a C compiler, Cython and "
        f"numpy). Cause: {_e}") from _e
from ._poolcore import PoolCore, PoolFuture, _Stream, _async_done  # noqa: E402,F401

_finish_many = _core.finish_many

__all__ = ["StreamPool"]

_perf_counter = time.perf_counter

_PAIR_SUFFIXES = ("n", "_n", "out", "_out", "new", "_new", "next", "_next", "_1")
#: Rows of the first batches, until each output's batch axis is known.
_LEARN = 4
_BATCH_NAMES = re.compile(r"(?i)^(.*batch.*|b|n|batch_size|bs)$")


def _compatible(a, b):
    """Shapes (lists of int/str/None, or None) that may describe the same tensor."""
    if a is None or b is None:
        return True
    if len(a) != len(b):
        return False
    return all(not (isinstance(x, int) and isinstance(y, int) and x != y)
               for x, y in zip(a, b))


def find_state_pairs(inputs, outputs, exclude=()):
    """Input -> output pairs that look like a state carried between calls.

    A pair is an input ``x`` and an output named ``x`` plus one of the usual
    suffixes (``xN``, ``x_out``, ...; case-insensitive), or ``initial_h``/
    ``initial_c`` and ``Y_h``/``Y_c``, of compatible shapes.  Raises
    InvalidInput when an input matches several outputs (or an output several
    inputs): then the pairs must be declared.
    """
    outs = {o.name: o for o in outputs}
    pairs = {}
    for vi in inputs:
        if vi.name in exclude:
            continue
        names = {vi.name + s for s in _PAIR_SUFFIXES}
        if vi.name.startswith("initial_"):
            names.add("Y_" + vi.name[len("initial_"):])
        lower = {n.lower() for n in names}
        found = [o for o in outs if o.lower() in lower and _compatible(vi.shape, outs[o].shape)]
        if len(found) > 1:
            raise InvalidInput(f"StreamPool: input '{vi.name}' may be carried to output "
                               f"{found}; declare it, e.g. state={{'{vi.name}': '{found[0]}'}}")
        if found:
            pairs[vi.name] = found[0]
    taken = {}
    for i, o in pairs.items():
        if o in taken:
            raise InvalidInput(f"StreamPool: output '{o}' may carry input '{taken[o]}' or "
                               f"'{i}'; declare the state pairs (state={{input: output}})")
        taken[o] = i
    return pairs


def _bucket(n, max_batch):
    """Batch size n rounded up to a bucket (at most max_batch): 1, 2, 4, 8, then
    multiples of 4 to 32, of 8 to 64, of 16 to 128, of 32 to 256, of 64
    beyond; so a pool of max_batch 256 runs at most 22 batch sizes (each one
    specialisation of the session: ``specialize.MAX_SPECIALISATIONS`` keeps
    32), padded by at most 3 rows to 32, 7 to 64, 15 to 128, 31 to 256
    (under a quarter of a batch above 12 rows).  (Padding rows cost as much
    as real ones: with multiples of 8 from 8 they were 4-8% of the rows run
    at 300 Silero streams, whose batches were 25-128 chunks.)"""
    if n <= 8:
        b = 1
        while b < n:
            b *= 2
    else:
        step = 4 if n <= 32 else 8 if n <= 64 else 16 if n <= 128 else 32 if n <= 256 else 64
        b = -(-n // step) * step
    return max(n, min(b, max_batch))


class StreamPool(PoolCore):
    """Many independent streams over one session, batched across streams.

    Parameters
    ----------
    session : fastlstm.InferenceSession
        Shared by every stream (a pool runs it from one worker thread; other
        threads may still use the session).
    state : None, "internal", or dict input name -> output name
        Where a stream's state lives (see the module docstring).  None: pairs
        found by name and shape; else internal when the model has recurrent
        layers; else none.
    context : dict input name -> int, or -> (int, axis)
        Per stream, the last ``n`` entries (along ``axis`` of the per-stream
        chunk, default 0) of what an input was fed last time are put before
        the next chunk: Silero VAD's ``{"input": 64}``.  Zeros before the first.
    constants : dict input name -> array
        Inputs fed the same value in every call (Silero's ``sr``).
    outputs : list of output names or None
        What a push returns (None: every output that is not a state).
    batch_axis : dict input name -> int
        Where the batch axis is, for inputs where it cannot be told: by
        default a dim named like "batch", else axis 1 of an input that feeds
        a recurrent node's X in layout 0 (and of a rank-3 state), else axis 0.
    max_batch : int
        Most chunks in one batched call.
    max_wait_us : float
        How long the first chunk of a batch waits for others to join.
    initial_state : dict input name (or node name in internal mode) -> array
        A stream's state when it opens (default zeros), per stream (no batch axis).
    idle_timeout : float or None
        Seconds after which a stream that has not pushed is closed by
        :meth:`reap_idle` (the server calls it periodically).
    worker : bool
        True: batches run on a worker thread of the pool.  False: on the
        caller's thread, when it calls :meth:`run_ready` (a server whose one
        thread reads the streams' chunks and runs their batches: on one core
        a second thread only adds wake-ups, see ``run_ready``); ``push``
        then runs the batches queued before its chunk's result.

    ``push`` returns a dict output name -> array of this stream (the batch
    axis removed).  Errors: a chunk that does not fit the input is refused
    by ``push`` itself (InvalidInput); a chunk the model fails on fails
    alone (the batch is retried stream by stream) and moves no state.
    """

    def __init__(self, session, state=None, context=None, constants=None, outputs=None,
                 batch_axis=None, max_batch=64, max_wait_us=1000, initial_state=None,
                 capacity=64, idle_timeout=None, worker=True):
        for name, value in (("max_batch", max_batch), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInput(f"StreamPool: {name} must be an int >= 1, got {value!r}")
        if isinstance(max_wait_us, bool) or not isinstance(
                max_wait_us, (int, float, np.integer, np.floating)) \
                or not 0 <= max_wait_us < float("inf"):
            raise InvalidInput(f"StreamPool: max_wait_us must be a number of microseconds "
                               f">= 0, got {max_wait_us!r}")
        self.session = session
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_us) / 1e6
        self.idle_timeout = idle_timeout
        ins = {vi.name: vi for vi in session.get_inputs()}
        outs = {vi.name: vi for vi in session.get_outputs()}
        constants = dict(constants or {})
        for name in constants:
            if name not in ins:
                raise InvalidInput(f"StreamPool: constant '{name}' is not an input of the "
                                   f"model; its inputs are {sorted(ins)}")
        self.constants = {}
        for name, v in constants.items():
            dtype = _np_dtype(ins[name].type)
            self.constants[name] = np.asarray(v, dtype=dtype) if dtype is not None \
                else np.asarray(v)
        carried = session.state_inputs()
        layers = session.recurrent_layers()

        # -- where the state lives
        if state is None:
            pairs = find_state_pairs([ins[n] for n in ins if n not in self.constants],
                                     outs.values(), exclude=carried if layers else ())
            mode = "external" if pairs else ("internal" if layers else "none")
        elif isinstance(state, str):
            if state != "internal":
                raise InvalidInput(f"StreamPool: state must be None, 'internal' or a dict "
                                   f"input -> output, got {state!r}")
            pairs, mode = {}, "internal"
        elif isinstance(state, dict):
            pairs = dict(state)
            mode = "external" if pairs else "none"
        else:
            raise InvalidInput(f"StreamPool: state must be None, 'internal' or a dict "
                               f"input -> output, got {type(state).__name__}")
        for i, o in pairs.items():
            if i not in ins:
                raise InvalidInput(f"StreamPool: state input '{i}' is not an input of the "
                                   f"model; its inputs are {sorted(ins)}")
            if o not in outs:
                raise InvalidInput(f"StreamPool: state output '{o}' is not an output of the "
                                   f"model; its outputs are {sorted(outs)}")
        if mode == "internal":
            if not layers:
                raise InvalidInput("StreamPool: state='internal' needs a model with LSTM, "
                                   "GRU or RNN nodes")
            from .serving import Stream
            Stream(session)         # the same checks: every layer forward, sizes known
        self.mode = mode
        self.pairs = pairs
        self._layers = layers if mode == "internal" else ()
        self._optional = carried if mode == "internal" else frozenset()

        # -- which inputs a push feeds
        self.data_inputs = [n for n in ins if n not in self.constants and n not in pairs
                            and n not in self._optional]
        if not self.data_inputs:
            raise InvalidInput("StreamPool: the model has no input left for a chunk (every "
                               "input is a constant or a state)")
        feeds_x = {}
        for n in layers:
            feeds_x[n.input(0)] = n.layer.spec.layout
        batch_axis = dict(batch_axis or {})
        self._axis = {}
        for name in list(self.data_inputs) + list(pairs):
            vi = ins[name]
            if name in batch_axis:
                ax = batch_axis[name]
            else:
                ax = _guess_batch_axis(vi, is_state=name in pairs, layout=feeds_x.get(name))
            rank = None if vi.shape is None else len(vi.shape)
            if ax is not None and rank is not None and not 0 <= ax < rank:
                raise InvalidInput(f"StreamPool: batch axis {ax} of input '{name}' is out "
                                   f"of range for rank {rank}")
            if ax is None:
                raise InvalidInput(f"StreamPool: cannot tell the batch axis of input "
                                   f"'{name}' (shape {vi.shape}); give batch_axis="
                                   f"{{'{name}': axis}}")
            if rank is not None and isinstance(vi.shape[ax], int) and vi.shape[ax] != 1:
                raise InvalidInput(f"StreamPool: input '{name}' has batch axis {ax} fixed "
                                   f"at {vi.shape[ax]}")
            self._axis[name] = ax
        self._fixed_batch = any(vi.shape is not None and isinstance(vi.shape[self._axis[n]], int)
                                for n, vi in ins.items() if n in self._axis)
        if self._fixed_batch:
            self.max_batch = 1          # the model takes one stream per call
        self._ins = ins

        # -- per-stream context
        self.context = {}
        self._ctx_shapes = {}
        for name, spec in dict(context or {}).items():
            if name not in self.data_inputs:
                raise InvalidInput(f"StreamPool: context input '{name}' is not one a chunk "
                                   f"feeds; those are {self.data_inputs}")
            n, axis = (spec, 0) if not isinstance(spec, tuple) else spec
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise InvalidInput(f"StreamPool: context of '{name}' must be an int >= 0")
            self.context[name] = (int(n), int(axis))
            vi = ins[name]
            if vi.shape is not None:        # the rows' shape, when the model tells it
                per = [d for k, d in enumerate(vi.shape) if k != self._axis[name]]
                if 0 <= axis < len(per):
                    per[axis] = int(n)
                    if all(isinstance(d, int) for d in per):
                        self._ctx_shapes[name] = (tuple(per), _np_dtype(vi.type) or np.float32)

        # -- outputs
        state_outs = set(pairs.values())
        if outputs is None:
            outputs = [o for o in outs if o not in state_outs]
        for o in outputs:
            if o not in outs:
                raise InvalidInput(f"StreamPool: '{o}' is not an output of the model; its "
                                   f"outputs are {sorted(outs)}")
        self.outputs = list(outputs)
        self._run_outputs = list(dict.fromkeys(self.outputs + [pairs[i] for i in pairs]))
        self._out_axis = {}             # output -> batch axis (found by the first batches)
        self._out_shapes = {o: outs[o].shape for o in outs}

        self._initial = dict(initial_state or {})
        self._capacity = 0
        self._states = {}               # name -> array, slot on the batch axis
        self._contexts = {}             # input name -> array [capacity, *context shape]
        self._chunk_shapes = {}         # input name -> per-stream chunk shape (first push)
        self._streams = {}
        self._free = []
        self._next_slot = 1             # slot 0: always the initial state (padding rows)
        self._next_id = 0
        self._want_capacity = int(capacity)
        self._queue = deque()
        self._bufs = {}                 # (input, batch, shape, dtype) -> kept input buffer
        self._fast = set()              # (dtype, shape) of single-input chunks found valid
        # the last of them, compared in C by submit (PoolCore: the dims and
        # the dtype object's identity; submit hot in timeit 0.35 us, 1.2 us
        # in Python)
        self._fast_shape = self._fast_dtype = self._fast_key = None
        self._lock = threading.Lock()   # the queue and the stream table
        self._cv = threading.Condition(self._lock)
        self._store = threading.RLock()   # held by the worker around gather .. scatter
        self._running = threading.Lock()  # without a worker: held by run_ready's caller
        self._resets = []
        self._closed = False
        self.batches = 0
        self.chunks = 0
        self.on_batch = None            # callback(n_chunks, seconds): monitoring hooks
        self._grow(self._want_capacity)     # (a state of unknown shape is refused here)
        self._worker = None
        if worker:
            self._worker = threading.Thread(target=self._loop, name="fastlstm-streampool",
                                            daemon=True)
            self._worker.start()

    # ------------------------------------------------------------- streams
    def open(self):
        """Open a stream; returns its id (an int).  Its state starts initial
        (zeros unless ``initial_state`` was given), its context zeros."""
        with self._lock:
            if self._closed:
                raise FastLSTMError("the StreamPool is closed")
            sid = self._next_id
            self._next_id += 1
            if self._free:
                slot = self._free.pop()
            else:
                slot = self._next_slot
                self._next_slot += 1
            st = _Stream(sid, slot)
            self._streams[sid] = st
            self._resets.append(slot)
        return sid

    def close(self, stream_id):
        """Close a stream: chunks it already pushed are still answered; its slot is
        then reused.  Closing an unknown or closed stream does nothing."""
        with self._lock:
            st = self._streams.pop(stream_id, None)
            if st is None:
                return
            st.closing = True
            self._release(st)

    def _release(self, st):
        """Give a closing stream's slot back once its chunks are answered (under _cv)."""
        if not st.freed and st.submitted == st.answered:
            st.freed = True
            self._free.append(st.slot)

    def __len__(self):
        return len(self._streams)

    def __contains__(self, stream_id):
        return stream_id in self._streams

    @property
    def bytes_per_stream(self):
        """Bytes the pool keeps for each stream: its state and context rows
        (known after the first chunk for context) plus its bookkeeping."""
        cap = max(self._capacity, 1)
        n = sum(a.nbytes // cap for a in self._states.values())
        n += sum(a.nbytes // cap for a in self._contexts.values())
        # + its _Stream record and its entry (key, value) in the dict of streams
        return n + sys.getsizeof(_Stream(0, 0)) + 3 * 8 + 28

    def reap_idle(self, now=None):
        """Close the streams idle for longer than ``idle_timeout``; returns their ids."""
        if self.idle_timeout is None:
            return []
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [sid for sid, st in self._streams.items()
                    if st.submitted == st.answered and now - st.last_used > self.idle_timeout]
        for sid in idle:
            self.close(sid)
        return idle

    def get_state(self, stream_id):
        """Copies of a stream's state and context: name -> array (no batch axis);
        internal state as node name -> (h, c)."""
        st = self._get(stream_id)
        with self._store:
            self._apply_resets()
            self._grow(st.slot + 1)
            out = {}
            for name, arr in self._states.items():
                out[name] = np.take(arr, st.slot, axis=self._state_axis(name)).copy()
            for name, arr in self._contexts.items():
                out["context:" + name] = arr[st.slot].copy()
        return out

    def set_state(self, stream_id, state):
        """Replace a stream's state (and context) with what ``get_state`` returned."""
        st = self._get(stream_id)
        with self._store:
            self._apply_resets()
            self._grow(st.slot + 1)
            for name, value in state.items():
                if name.startswith("context:"):
                    cname = name[len("context:"):]
                    if cname not in self.context:
                        raise InvalidInput(f"StreamPool: '{cname}' has no context in this "
                                           f"pool; contexts: {sorted(self.context)}")
                    value = np.asarray(value)
                    arr = self._contexts.get(cname)
                    if arr is None:
                        arr = self._contexts[cname] = np.zeros(
                            (self._capacity,) + value.shape, value.dtype)
                    if value.shape != arr.shape[1:]:
                        raise InvalidInput(f"StreamPool: context '{cname}' has shape "
                                           f"{arr.shape[1:]}, got {value.shape}")
                    arr[st.slot] = value
                    continue
                if name not in self._states:
                    raise InvalidInput(f"StreamPool: '{name}' is not a state of this pool; "
                                       f"they are {sorted(self._states)}")
                arr = self._states[name]
                ax = self._state_axis(name)
                idx = (slice(None),) * ax + (st.slot,)
                value = np.asarray(value, dtype=arr.dtype)
                if value.shape != arr[idx].shape:
                    raise InvalidInput(f"StreamPool: state '{name}' has shape "
                                       f"{arr[idx].shape}, got {value.shape}")
                arr[idx] = value

    def _get(self, stream_id):
        st = self._streams.get(stream_id)
        if st is None:
            raise InvalidInput(f"StreamPool: no open stream {stream_id!r}")
        return st

    # ------------------------------------------------------------- pushes
    def _chunk_key(self, chunk):
        """Validate a chunk; returns (its arrays in ``data_inputs`` order, their shapes)."""
        if not isinstance(chunk, dict):
            if len(self.data_inputs) != 1:
                raise InvalidInput(f"StreamPool: this model's chunks feed "
                                   f"{self.data_inputs}; push a dict of them")
            chunk = {self.data_inputs[0]: chunk}
        feed = {}
        for name in self.data_inputs:
            if name not in chunk:
                raise InvalidInput(f"StreamPool: chunk is missing input '{name}'")
            a = chunk[name]
            vi = self._ins[name]
            dtype = _np_dtype(vi.type)
            if not isinstance(a, np.ndarray):
                if isinstance(a, (list, tuple, int, float)):
                    a = np.asarray(a, dtype=dtype)
                else:
                    raise InvalidInput(f"StreamPool: chunk of '{name}' must be a numpy "
                                       f"array, not {type(a).__name__}")
            if dtype is not None and a.dtype != dtype:
                raise InvalidInput(f"StreamPool: chunk of '{name}' has dtype {a.dtype}, "
                                   f"expected {dtype} ({vi.type})")
            ax = self._axis[name]
            if vi.shape is not None:
                per = [d for k, d in enumerate(vi.shape) if k != ax]
                if a.ndim != len(per):
                    raise InvalidInput(f"StreamPool: chunk of '{name}' has shape {a.shape}; "
                                       f"a stream's chunk has rank {len(per)} (the input "
                                       f"{list(vi.shape)} without its batch axis {ax})")
                ctx = self.context.get(name)
                for k, (want, got) in enumerate(zip(per, a.shape)):
                    if ctx is not None and k == ctx[1]:
                        got += ctx[0]
                    if isinstance(want, int) and want != got:
                        raise InvalidInput(f"StreamPool: chunk of '{name}' has shape "
                                           f"{a.shape}: axis {k} must make {want}"
                                           + (f" with the {ctx[0]} of context" if ctx and
                                              k == ctx[1] else ""))
            ctx = self.context.get(name)
            if ctx is not None and not 0 <= ctx[1] < a.ndim:
                raise InvalidInput(f"StreamPool: context axis {ctx[1]} of '{name}' is out "
                                   f"of range for a chunk of rank {a.ndim}")
            feed[name] = a
        arrays = tuple(feed[n] for n in self.data_inputs)
        key = tuple(a.shape for a in arrays)
        if all(type(a) is np.ndarray for a in arrays):
            sig = (arrays[0].dtype, key[0]) if len(arrays) == 1 else \
                tuple([(a.dtype, a.shape) for a in arrays])
            with self._lock:
                if len(self._fast) < 64:
                    self._fast.add(sig)
                if len(arrays) == 1:        # (all three at once: submit reads them unlocked)
                    self._set_fast(key[0], arrays[0].dtype, key)
        return arrays, key

    def _fast_dict(self, chunk):
        """Whether a dict chunk holds exactly arrays of dtypes and shapes seen valid."""
        if len(chunk) != len(self.data_inputs) or len(chunk) < 2:
            return False
        try:
            sig = tuple([(a.dtype, a.shape) for a in [chunk[n] for n in self.data_inputs]
                         if type(a) is np.ndarray])
        except KeyError:
            return False
        return sig in self._fast

    # ``submit`` (``PoolCore.submit``, in C) queues a chunk of the last shape
    # and dtype found valid without Python code; others come here.
    def _slow_key(self, chunk):
        """A chunk's arrays (``data_inputs`` order) and key: a shape and dtype seen
        valid, or a dict of such arrays, at once; else validated."""
        if type(chunk) is np.ndarray and (chunk.dtype, chunk.shape) in self._fast:
            return (chunk,), (chunk.shape,)             # a shape and dtype seen valid
        if type(chunk) is dict and self._fast_dict(chunk):
            arrays = tuple([chunk[n] for n in self.data_inputs])
            return arrays, tuple([a.shape for a in arrays])
        return self._chunk_key(chunk)

    def push(self, stream_id, chunk, timeout=None):
        """Run a chunk of a stream (blocking, from any thread); returns its result.
        (Without a worker thread, this thread runs the batches queued up to and
        including this chunk first.)"""
        fut = self.submit(stream_id, chunk)
        if self._worker is None:
            while not fut._done and self.run_ready(force=True):
                pass
        return fut.result(timeout)

    def asubmit(self, stream_id, chunk):
        """``submit`` for asyncio (call it from the event loop's thread): the
        chunk is queued now; returns an asyncio future of its result.  (The
        worker wakes each loop once per batch, with all its results.)"""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        fut = self.submit(stream_id, chunk, loop, done)
        if fut._aloop is None:          # refused before it was queued
            if fut._error is not None:
                done.set_exception(fut._error)
            else:
                done.set_result(fut._value)
        return done

    async def apush(self, stream_id, chunk):
        """``push`` for asyncio: awaits the result without blocking the loop."""
        return await self.asubmit(stream_id, chunk)

    def shutdown(self):
        """Answer every chunk already submitted, then stop the worker."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join()
        else:
            while self.run_ready(force=True):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    # ------------------------------------------------------------- worker
    def _take(self):
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].t0 + self.max_wait
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cv.wait(left)
            return self._form(self._queue)

    def _form(self, q):
        """A batch out of the queue ``q`` (under the lock): its oldest chunks, at
        most ``max_batch``, at most one per stream (a stream's later chunk
        waits for the next batch)."""
        # (in C: one popleft per chunk taken, the backlog left in place)
        batch = _core.form_batch(q, self.max_batch)
        # (Running a bucket's worth exactly and putting the rest back to
        # lead the next batch saved the padding rows, 4-8% of the rows run
        # at 300 Silero streams, but the rest, already old, started the
        # next batch at once: batches of 16 instead of 64, and the CPU per
        # chunk came out the same.  Finer buckets below 32 instead.)
        return batch

    def _loop(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            self._process(batch)

    def ready_at(self):
        """When (``time.perf_counter()``) the queued chunks make a batch that
        ``run_ready`` runs: now or earlier when ``max_batch`` are queued, their
        oldest's arrival + ``max_wait_us`` else; None when nothing is queued."""
        q = self._queue
        if not q:
            return None
        if len(q) >= self.max_batch:
            return 0.0
        try:
            return q[0].t0 + self.max_wait
        except IndexError:
            return None

    def run_ready(self, force=False):
        """Without a worker thread (``worker=False``): run one batch on this
        thread if it is ready (``max_batch`` chunks queued, or the oldest has
        waited ``max_wait_us``; any queued chunks with ``force``).  Returns
        how many chunks ran (0: none was ready).

        Why a pool may have no thread: on one core, a worker thread beside
        the thread that reads the chunks costs a thread switch each time one
        hands work to the other, and the reader, woken while the worker holds
        the GIL between two kernels, waits for it (measured on this VM, 512
        Silero streams on one core: the worker spent 41.7 us of CPU per chunk
        in batches of ~56 against 30 us for the same batches run alone, and
        the reader 8 us per chunk; a 0.5 ms sleep costs 42 us of CPU here)."""
        if self._worker is not None:
            raise FastLSTMError("StreamPool.run_ready: this pool runs its batches on its "
                                "worker thread (made with worker=True)")
        with self._running:         # (batches in the order they were formed)
            with self._cv:
                q = self._queue
                if not q:
                    return 0
                if not force and len(q) < self.max_batch and \
                        _perf_counter() < q[0].t0 + self.max_wait:
                    return 0
                batch = self._form(q)
            self._process(batch)
        return len(batch)

    def _process(self, batch):
        """Run a batch taken from the queue and answer each of its chunks."""
        live = batch
        t = time.perf_counter()
        try:
            if live:
                if _core.same_key(live):            # (by identity, in C)
                    groups = {live[0].key: live}
                else:
                    groups = {}
                    for r in live:
                        groups.setdefault(r.key, []).append(r)
                with self._store:
                    self._apply_resets()
                    self._grow(self._next_slot)
                    for reqs in groups.values():
                        self._run_group(reqs)
        except BaseException as e:     # a bug: never leave a caller waiting
            for r in live:
                if not r.done():
                    r.set_exception(e)
        finally:
            closing = _core.answered(batch, time.monotonic())
            if closing is not None:
                with self._lock:
                    for st in closing:
                        self._release(st)
        self.batches += 1
        self.chunks += len(live)
        if _async_done:
            _wake_loops()
        hook = self.on_batch
        if hook is not None and live:
            hook(len(live), time.perf_counter() - t)

    def _run_group(self, reqs):
        try:
            results = self._run(reqs)
        except FastLSTMError as e:
            if len(reqs) == 1:
                reqs[0].set_exception(e)
                return
            for r in reqs:            # find whose chunk it was: each alone
                try:
                    res = self._run([r])
                except FastLSTMError as e1:
                    r.set_exception(e1)
                else:
                    r.set_result(res[0])
            return
        _finish_many(reqs, results, time.perf_counter())

    def _state_axis(self, name):
        return self._axis[name] if name in self.pairs else 1

    def _apply_resets(self):
        with self._lock:
            resets, self._resets = self._resets, []
            top = self._next_slot
        if not resets:
            return
        self._grow(top)
        slots = np.asarray(resets, np.intp)
        for name, arr in self._states.items():
            ax = self._state_axis(name)
            idx = (slice(None),) * ax
            arr[idx + (slots,)] = np.take(arr, [0], axis=ax)
        for arr in self._contexts.values():
            arr[slots] = 0

    def _grow(self, need):
        """Make the state arrays hold at least ``need`` slots (doubling)."""
        if need <= self._capacity:
            return
        cap = max(self._want_capacity, self._capacity)
        while cap < need:
            cap *= 2
        old = self._capacity
        if not old:
            self._init_states(cap)
        else:
            for name, arr in list(self._states.items()):
                ax = self._state_axis(name)
                shape = list(arr.shape)
                shape[ax] = cap
                new = np.empty(shape, arr.dtype)
                idx = (slice(None),) * ax
                new[idx + (slice(0, old),)] = arr
                new[idx + (slice(old, None),)] = np.take(arr, [0], axis=ax)
                self._states[name] = new
        for name, arr in list(self._contexts.items()):
            if arr.shape[0] < cap:
                new = np.zeros((cap,) + arr.shape[1:], arr.dtype)
                new[:arr.shape[0]] = arr
                self._contexts[name] = new
        self._capacity = cap

    def _init_states(self, cap):
        for name, (shape, dtype) in self._ctx_shapes.items():
            self._contexts[name] = np.zeros((cap,) + shape, dtype)
        for i in self.pairs:
            vi = self._ins[i]
            ax = self._axis[i]
            if vi.shape is None or any(not isinstance(d, int) for k, d in enumerate(vi.shape)
                                       if k != ax):
                init = self._initial.get(i)
                if init is None:
                    raise InvalidInput(f"StreamPool: state input '{i}' has shape "
                                       f"{vi.shape}; give its per-stream shape with "
                                       f"initial_state={{'{i}': array}}")
                per = np.asarray(init).shape
            else:
                per = tuple(d for k, d in enumerate(vi.shape) if k != ax)
            shape = per[:ax] + (cap,) + per[ax:]
            arr = np.zeros(shape, _np_dtype(vi.type) or np.float32)
            if i in self._initial:
                idx = (slice(None),) * ax + (slice(None),)
                arr[idx] = np.expand_dims(np.asarray(self._initial[i], arr.dtype), ax)
            self._states[i] = arr
        for node in self._layers:
            L = node.layer
            shape = (L.spec.num_directions, cap, L.hidden_size)
            for part in ("h", "c") if L.desc.has_cell else ("h",):
                arr = np.zeros(shape, np.float32)
                init = self._initial.get(f"{node.name}:{part}")
                if init is not None:
                    arr[:] = np.expand_dims(np.asarray(init, np.float32), 1)
                self._states[f"{node.name}:{part}"] = arr

    def _run(self, reqs):
        """One batched call for requests whose chunks have the same shapes; returns
        each one's result dict.  State and context are scattered back only
        when the call succeeded."""
        job = self._gather(reqs)
        return self._scatter(job, self._call(job))

    def _kept(self, key, shape, dtype):
        """An input buffer kept between batches (a fresh one of this size costs
        page faults)."""
        buf = self._bufs.get(key)
        if buf is None:
            if len(self._bufs) > 64:
                self._bufs.clear()
            buf = self._bufs[key] = np.zeros(shape, dtype)
        return buf

    def _gather(self, reqs):
        """A batch's feed: chunks (after their context) and state rows of its
        streams, padded to the bucket's size with rows of slot 0."""
        n = len(reqs)
        nb = _bucket(n, self.max_batch)
        if len(self._out_axis) < len(self.outputs):
            nb = max(nb, min(_LEARN, self.max_batch))
        slots = np.zeros(nb, np.intp)          # padding rows read slot 0 (the initial state)
        _core.slots_of(reqs, slots)
        feed = dict(self.constants)
        new_ctx = {}
        bufs = []
        for j, name in enumerate(self.data_inputs):
            first = reqs[0].chunk[j]
            ctx = self.context.get(name)
            if ctx is None:
                per_shape = first.shape
            else:
                c_n, c_ax = ctx
                per_shape = list(first.shape)
                per_shape[c_ax] += c_n
                per_shape = tuple(per_shape)
            buf = self._kept((name, nb, per_shape, first.dtype), (nb,) + per_shape, first.dtype)
            store = None
            if ctx is not None:
                store = self._contexts.get(name)
                if store is None:
                    cshape = list(first.shape)
                    cshape[c_ax] = c_n
                    store = self._contexts[name] = np.zeros(
                        (self._capacity,) + tuple(cshape), first.dtype)
            if (ctx is None or c_ax == 0) and _core.fill_rows(reqs, j, buf, nb, store, slots):
                # (one C loop: context row, then chunk, per row; the context
                # goes back from each row's tail, see _scatter)
                if ctx is not None:
                    new_ctx[name] = (None, buf)
            else:
                if nb > n:
                    buf[n:] = 0
                chunks = [r.chunk[j] for r in reqs]
                if ctx is None:
                    buf[:n] = chunks
                else:
                    head = (slice(None),) * (c_ax + 1)
                    buf[head + (slice(0, c_n),)] = store[slots]
                    buf[:n][head + (slice(c_n, None),)] = chunks
                    total = per_shape[c_ax]
                    new_ctx[name] = (buf[:n][head + (slice(total - c_n, total),)], None)
            bufs.append(buf)
            ax = self._axis[name]
            feed[name] = np.ascontiguousarray(np.moveaxis(buf, 0, ax)) if ax else buf
        for i in self.pairs:
            feed[i] = _take(self._states[i], slots, self._axis[i])
        run_ctx = None
        if self._layers:
            state = {}
            for node in self._layers:
                h = _take(self._states[node.name + ":h"], slots, 1)
                c = _take(self._states[node.name + ":c"], slots, 1) \
                    if node.layer.desc.has_cell else None
                state[node.name] = (h, c)
            run_ctx = RunContext(state=state)
        return n, nb, slots, feed, new_ctx, bufs, run_ctx

    def _call(self, job):
        """The session's batched call: a list of ``_run_outputs``."""
        feed, run_ctx = job[3], job[6]
        if run_ctx is None:
            return self.session.run(self._run_outputs, feed)
        return self.session._run_with(self._run_outputs, feed, run_ctx,
                                      optional=self._optional, run_all=True)

    def _scatter(self, job, got):
        """State and context rows back to their slots; each stream's outputs."""
        n, nb, slots, feed, new_ctx, bufs, run_ctx = job
        values = dict(zip(self._run_outputs, got))
        for o, v in values.items():   # an output that is a view of a kept buffer: copy it
            if any(np.may_share_memory(v, b) for b in bufs):
                values[o] = v.copy()
        live = slots[:n]
        for i, o in self.pairs.items():
            new, store, ax = values[o], self._states[i], self._axis[i]
            want = store.shape[:ax] + (nb,) + store.shape[ax + 1:]
            if new.shape != want:
                raise InvalidInput(f"StreamPool: state output '{o}' has shape {new.shape}; "
                                   f"input '{i}' was fed {want}")
        for i, o in self.pairs.items():
            _put(self._states[i], slots, n, values[o], self._axis[i])
        if run_ctx is not None:
            for node in self._layers:
                h, c = run_ctx.state[node.name]
                _put(self._states[node.name + ":h"], slots, n, h, 1)
                if c is not None:
                    _put(self._states[node.name + ":c"], slots, n, c, 1)
        for name, (part, buf) in new_ctx.items():
            store = self._contexts[name]
            if buf is None or not _core.put_tails(store, slots, n, buf):
                store[live] = part if buf is None else buf[:n, buf.shape[1] - store.shape[1]:]
        # split the outputs by stream: each result a dict of views of its rows
        per = []
        for o in self.outputs:
            arr = values[o]
            ax = self._output_axis(o, arr, nb)
            per.append([arr] * n if ax is None else
                       list(np.moveaxis(arr, ax, 0)[:n]) if ax else list(arr[:n]))
        return _core.dicts_of(self.outputs, per, n)

    def _output_axis(self, name, arr, nb):
        """The batch axis of an output: the dim of the batch's size (preferring
        one the model names like a batch, or leaves unnamed over one it fixes).
        Until every output's axis is sure, batches are padded to at least
        ``_LEARN`` rows (see _bucket) so that a dim of size 1 is not taken for it."""
        ax = self._out_axis.get(name)
        if ax is not None:
            return ax
        cand = [k for k, d in enumerate(arr.shape) if d == nb]
        shape = self._out_shapes.get(name)
        if shape is not None and len(shape) == arr.ndim:
            named = [k for k in cand if isinstance(shape[k], str) and _BATCH_NAMES.match(shape[k])]
            free = [k for k in cand if not isinstance(shape[k], int)]
            cand = named or free or cand
        if not cand:
            raise InvalidInput(f"StreamPool: output '{name}' of shape {arr.shape} has no "
                               f"axis of the batch size {nb}; it cannot be split by stream")
        if len(cand) == 1 and (nb > 1 or self.max_batch == 1):
            self._out_axis[name] = cand[0]
        return cand[0]



def _wake_loops():
    """Hand the answered ``apush`` futures to their loops, one call per loop."""
    by_loop = {}
    while _async_done:
        try:
            f = _async_done.popleft()
        except IndexError:
            break
        by_loop.setdefault(f._aloop, []).append(f)
    for loop, futs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, futs)
        except RuntimeError:        # the loop is closed: nobody waits any more
            pass


def _settle_all(futs):
    for fut in futs:
        afut = fut._afut
        if afut.done():
            continue
        if fut._error is not None:
            afut.set_exception(fut._error)
        else:
            afut.set_result(fut._value)


def _take(store, slots, ax):
    """``np.take(store, slots, axis=ax)``: one memcpy per row in C when the
    arrays allow it (C-contiguous store)."""
    shape = list(store.shape)
    shape[ax] = len(slots)
    out = np.empty(shape, store.dtype)
    if _core.take_rows(store, slots, out, ax):
        return out
    return np.take(store, slots, axis=ax)


def _put(store, slots, n, new, ax):
    """Rows ``0..n`` of ``new`` (batch axis ``ax``) into ``store`` at ``slots[:n]``:
    one memcpy per row in C when the arrays allow it, else numpy."""
    if not _core.put_rows(store, slots, n, new, ax):
        idx = (slice(None),) * ax
        store[idx + (slots[:n],)] = new[idx + (slice(0, n),)]


def _np_dtype(type_str):
    table = {"tensor(float)": np.float32, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
             "tensor(float16)": np.float16, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
             "tensor(int16)": np.int16}
    return table.get(type_str)


def _guess_batch_axis(vi, is_state, layout):
    shape = vi.shape
    if shape is None:
        return 0
    named = [k for k, d in enumerate(shape) if isinstance(d, str) and _BATCH_NAMES.match(d)]
    if len(named) == 1:
        return named[0]
    if layout is not None:          # feeds a recurrent X: [T, B, I] or [B, T, I]
        return 1 if layout == 0 else 0
    if is_state:
        free = [k for k, d in enumerate(shape) if not isinstance(d, int)]
        if len(free) == 1:
            return free[0]
        if len(shape) == 3:         # ONNX's [num_directions, batch, hidden]
            return 1
    if len(shape) == 0:
        return None
    return 0
