"""Serving: streams that carry state, packed variable-length batches, and a
dynamic micro-batcher for concurrent callers.

    sess = fastlstm.InferenceSession("model.onnx")

    stream = sess.stream()                   # carries every layer's h/c
    y1, = stream.run(["Y"], {"X": chunk1})   # steps 0..k
    y2, = stream.run(["Y"], {"X": chunk2})   # continues where chunk1 ended

    outs = sess.run_sequences([x_a, x_b, x_c])      # [T_i, input] each, any lengths
    outs[1]["Y_h"]                                   # as if x_b ran alone

    with fastlstm.MicroBatcher(sess, max_batch=32, max_wait_us=500) as mb:
        result = mb.run(x)                   # from many threads at once
"""
import threading
import time
from collections import deque
from concurrent.futures import Future

import numpy as np

from ._extension import frontend
from .errors import FastLSTMError, InvalidInput, UnsupportedOp
from .plan import RunContext


class Stream:
    """A stateful handle on a session: each call continues the sequences of the
    previous one.

    Every recurrent node of the model keeps its h (and c) here between calls;
    its initial_h/initial_c inputs are not fed (the stream supplies them).  All
    recurrent nodes must run forward: a reverse or bidirectional layer needs
    the whole sequence before its first output.

    Feeding a sequence in pieces gives the same outputs as feeding it whole;
    a piece of zero steps changes nothing.  The state is updated in place by
    the front end; the arrays a call returns belong to the caller.  A stream
    is not meant to be shared between threads; open one per caller (many
    streams on one session are independent).
    """

    def __init__(self, session, batch_size=1):
        self._session = session
        self._layers = session.recurrent_layers()
        if not self._layers:
            raise FastLSTMError("the model has no LSTM, GRU or RNN node: nothing to stream")
        for n in self._layers:
            direction = n.layer.spec.direction
            if direction != "forward":
                raise UnsupportedOp(f"{n.describe()} runs {direction}; a stream "
                                    f"needs every recurrent layer to run forward: a "
                                    f"{direction} layer's output at the first step "
                                    f"depends on the last step, so it cannot be computed "
                                    f"chunk by chunk (run() the whole sequence, or use "
                                    f"run_sequences)",
                                    n.op_type, n.domain, n.since_version, n.name)
            if not n.layer.hidden_size:
                raise UnsupportedOp(f"{n.describe()}: hidden_size is not known before "
                                    f"the first run (weights are graph inputs and the node "
                                    f"has no hidden_size attribute)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be an int >= 1, got {batch_size!r}")
        from . import limits
        with limits.limit(session._max_tensor_bytes):
            for n in self._layers:
                limits.check_shape((n.layer.spec.num_directions, batch_size,
                                    n.layer.hidden_size), np.float32, n,
                                   f"the stream state of batch_size {batch_size}")
        self.batch_size = batch_size
        self._optional = session.state_inputs()
        self.reset()

    def _zero_state(self, node):
        shape = (node.layer.spec.num_directions, self.batch_size, node.layer.hidden_size)
        return (np.zeros(shape, np.float32),
                np.zeros(shape, np.float32) if node.layer.desc.has_cell else None)

    def reset(self):
        """Start over: every state back to zeros."""
        self._ctx = RunContext(state={n.name: self._zero_state(n) for n in self._layers})

    @property
    def state(self):
        """Copies of the carried state: node name -> {"h": array, "c": array or None},
        each [num_directions, batch, hidden] (whatever the node's layout)."""
        return {name: {"h": h.copy(), "c": None if c is None else c.copy()}
                for name, (h, c) in self._ctx.state.items()}

    def set_state(self, node, h=None, c=None):
        """Replace the state of recurrent node ``node`` (its name); None keeps a part.

        ``node`` may also be a whole state as ``state`` returns it (node name ->
        {"h": ..., "c": ...}), so ``stream.set_state(saved)`` restores
        ``saved = stream.state``; every node it names is checked before any
        is changed.
        """
        if isinstance(node, dict):
            if h is not None or c is not None:
                raise InvalidInput("set_state(state) takes a whole state (a dict of node "
                                   "name -> {'h': ..., 'c': ...}); do not pass h or c with it")
            saved = dict(self._ctx.state)
            try:
                for name, part in node.items():
                    if not isinstance(part, dict) or set(part) - {"h", "c"}:
                        raise InvalidInput(f"state of '{name}' must be a dict with keys 'h' "
                                           f"and 'c', got {part!r:.80}")
                    self.set_state(name, part.get("h"), part.get("c"))
            except BaseException:
                self._ctx.state.clear()
                self._ctx.state.update(saved)
                raise
            return
        if node not in self._ctx.state:
            raise InvalidInput(f"'{node}' is not a recurrent node of this model; its "
                               f"recurrent nodes are {sorted(self._ctx.state)}")
        old_h, old_c = self._ctx.state[node]
        new = []
        for label, value, old in (("h", h, old_h), ("c", c, old_c)):
            if value is None:
                new.append(old)
                continue
            if old is None:
                raise InvalidInput(f"node '{node}' has no cell state {label}")
            value = np.asarray(value)
            if value.dtype != np.float32 or value.shape != old.shape:
                raise InvalidInput(f"state {label} of '{node}' must be float32 of shape "
                                   f"{old.shape}, got {value.dtype} {value.shape}")
            new.append(np.ascontiguousarray(value).copy())
        self._ctx.state[node] = tuple(new)

    def run(self, output_names, input_feed):
        """Like ``InferenceSession.run``, continuing from the carried state."""
        for name in input_feed:
            if name in self._optional:
                raise InvalidInput(f"'{name}' is carried by the stream; set it with "
                                   f"stream.set_state() instead of feeding it")
        return self._session._run_with(output_names, input_feed, self._ctx,
                                       optional=self._optional, run_all=True)

    __call__ = run


def _axes(node, output_index):
    """(time axis or None, batch axis) of a recurrent node output."""
    layout = node.layer.spec.layout
    if output_index == 0:               # Y: [T, D, B, H], [B, T, D, H] or fused [T, B, D, H]
        if node.layer.y_tbdh:
            return (0, 1)
        return (0, 2) if layout == 0 else (1, 0)
    return (None, 1) if layout == 0 else (None, 0)   # Y_h, Y_c: [D, B, H] / [B, D, H]


class SequenceBatcher:
    """Packs variable-length sequences into one batch for a model whose input
    sequence feeds a recurrent node directly (through Identity at most) and
    whose outputs are outputs of recurrent nodes."""

    def __init__(self, session):
        self._session = session
        alias = {}
        for n, _ in session.plan_runners():
            if n.op_type == "Identity":
                alias[n.outputs[0]] = alias.get(n.inputs[0], n.inputs[0])
        layers = session.recurrent_layers()
        state_inputs = session.state_inputs()
        self._state_inputs = state_inputs
        data_inputs = [vi for vi in session.get_inputs() if vi.name not in state_inputs]
        if len(layers) == 0 or len(data_inputs) != 1:
            raise UnsupportedOp("run_sequences needs a model with one sequence input feeding "
                                "recurrent nodes (and optionally their initial states)")
        self.input = data_inputs[0]
        first = layers[0]
        if alias.get(first.input(0), first.input(0)) != self.input.name:
            raise UnsupportedOp(f"run_sequences: input '{self.input.name}' must feed "
                                f"{first.describe()} directly")
        self.batch_first = first.layer.spec.layout == 1
        producers = {}
        for n in layers:
            for k, o in enumerate(n.outputs):
                if o:
                    producers[o] = (n, k)
        self.outputs = {}
        for vi in session.get_outputs():
            src = alias.get(vi.name, vi.name)
            if src not in producers:
                raise UnsupportedOp(f"run_sequences: output '{vi.name}' does not come from a "
                                    f"recurrent node, so its batch and time axes are unknown")
            self.outputs[vi.name] = _axes(*producers[src])
        shape = self.input.shape
        self.input_size = shape[-1] if shape and isinstance(shape[-1], int) else None

    def check(self, seq, k=0):
        """Validate one sequence ([T, input_size] float32); returns it contiguous."""
        if not isinstance(seq, np.ndarray):
            raise InvalidInput(f"sequence {k} must be a numpy.ndarray, not {type(seq).__name__}")
        if seq.dtype != np.float32:
            raise InvalidInput(f"sequence {k} has dtype {seq.dtype}, expected float32")
        if seq.ndim != 2:
            raise InvalidInput(f"sequence {k} has shape {seq.shape}; expected "
                               f"[seq_length, input_size]")
        if self.input_size is not None and seq.shape[1] != self.input_size:
            raise InvalidInput(f"sequence {k} has input size {seq.shape[1]}, the model's "
                               f"input '{self.input.name}' takes {self.input_size}")
        return np.ascontiguousarray(seq)

    def run(self, sequences, output_names=None):
        """Run the sequences as one batch; returns one dict of outputs per sequence."""
        seqs = [self.check(s, k) for k, s in enumerate(sequences)]
        if not seqs:
            return []
        sizes = {s.shape[1] for s in seqs}
        if len(sizes) > 1:
            raise InvalidInput(f"sequences have different input sizes {sorted(sizes)}")
        names = list(self.outputs) if output_names is None else list(output_names)
        for n in names:
            if n not in self.outputs:
                raise InvalidInput(f"'{n}' is not an output of this model; its outputs are "
                                   f"{list(self.outputs)}")
        x, lens = frontend.pack_sequences(seqs, seqs[0].shape[1], self.batch_first)
        got = self._session._run_with(names, {self.input.name: x}, RunContext(lens=lens),
                                      optional=self._state_inputs)
        results = []
        for b, L in enumerate(lens.tolist()):
            out = {}
            for n, arr in zip(names, got):
                t_axis, b_axis = self.outputs[n]
                v = np.take(arr, b, axis=b_axis)
                if t_axis is not None:
                    t = t_axis if t_axis < b_axis else t_axis - 1
                    v = np.take(v, np.arange(L), axis=t)
                out[n] = v
            results.append(out)
        return results


class MicroBatcher:
    """Coalesces concurrent single-sequence requests into batches.

    Callers from any number of threads call ``run(x)`` (blocking) or
    ``submit(x)`` (a Future).  Each of ``workers`` threads takes up to ``max_batch`` pending
    requests, waiting at most ``max_wait_us`` after the first for more to
    arrive, runs them as one packed batch (``InferenceSession.run_sequences``)
    and hands each caller its own result.  A request that is invalid on its own
    fails alone; if a batch fails as a whole, its requests are retried one by one
    so each error reaches the caller it belongs to.  ``close()`` runs every
    request already submitted, then stops; submitting after that raises.
    """

    def __init__(self, session, max_batch=32, max_wait_us=500, output_names=None, workers=1):
        for name, value in (("max_batch", max_batch), ("workers", workers)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInput(f"MicroBatcher: {name} must be an int >= 1, got {value!r}")
        if isinstance(max_wait_us, bool) or not isinstance(max_wait_us, (int, float, np.integer,
                                                                         np.floating)) \
                or not 0 <= max_wait_us < float("inf"):
            raise InvalidInput(f"MicroBatcher: max_wait_us must be a number of microseconds "
                               f">= 0, got {max_wait_us!r}")
        self._batcher = SequenceBatcher(session)
        self.max_batch = int(max_batch)
        self.max_wait = max_wait_us / 1e6
        self.output_names = output_names
        self._queue = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.batches = 0          # batches run (for tests and monitoring)
        self._count_lock = threading.Lock()
        self._workers = [threading.Thread(target=self._loop, name=f"fastlstm-microbatcher-{k}",
                                          daemon=True) for k in range(workers)]
        for w in self._workers:
            w.start()

    def submit(self, x):
        """Queue one sequence [T, input_size]; returns a Future of its outputs dict."""
        fut = Future()
        try:
            x = self._batcher.check(x)
        except FastLSTMError as e:
            fut.set_exception(e)
            return fut
        with self._cv:
            if self._closed:
                raise FastLSTMError("the MicroBatcher is closed")
            self._queue.append((x, fut))
            self._cv.notify()
        return fut

    def run(self, x, timeout=None):
        """Run one sequence (blocking); returns its dict of outputs."""
        return self.submit(x).result(timeout)

    def _take(self):
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None
            deadline = time.perf_counter() + self.max_wait
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cv.wait(left)
            n = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _loop(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            with self._count_lock:
                self.batches += 1
            try:
                outs = self._batcher.run([x for x, _ in live], self.output_names)
            except Exception:
                for x, f in live:     # find whose request it was
                    try:
                        f.set_result(self._batcher.run([x], self.output_names)[0])
                    except Exception as e:
                        f.set_exception(e)
                continue
            for (_, f), out in zip(live, outs):
                f.set_result(out)

    def close(self):
        """Finish every submitted request, then stop the worker."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for w in self._workers:
            w.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
