# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The per-chunk hot path of :class:`fastlstm.StreamPool`, in C.

What a chunk costs outside the model's kernels is Python done once per chunk:
making its future, queueing it, finding its stream's slot, copying it behind
its context, splitting the outputs into its result, answering its future.
Here those loops run in C:

- ``PoolFuture`` and ``_Stream`` are extension types (their fields are C
  fields: the pool's loops read them without attribute lookups);
- ``PoolCore.submit`` (the base class of ``StreamPool``) queues a chunk of
  the shape and dtype last found valid without any Python code; any other
  chunk goes through ``StreamPool._slow_key`` (the validation in Python);
- ``slots_of``, ``fill_rows``, ``take_rows``, ``put_rows``, ``put_tails`` copy
  a batch's chunks, context rows and state rows with one C loop over its
  streams (``memcpy`` per row) instead of building lists and converting them
  with numpy; each checks dtypes, sizes, contiguity and slot ranges first
  and returns False (nothing copied) when an array does not fit, and the
  pool then takes its numpy path;
- ``dicts_of`` splits an output into each stream's result, ``finish_many``
  answers a batch's futures, ``answered`` does the streams' bookkeeping.

What this saves is measured in ``fastlstm/pool.py``'s docstring.
"""
import threading
import time
import _thread

import numpy as np
cimport numpy as cnp
from cpython.ref cimport PyObject
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.ref cimport Py_INCREF
from libc.string cimport memcpy, memset

from .errors import FastLSTMError, InvalidInput

cnp.import_array()

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FL_PREFETCH(p, rw) __builtin_prefetch((p), (rw), 3)
    #else
    #define FL_PREFETCH(p, rw) ((void)0)
    #endif
    """
    void FL_PREFETCH(const void* p, int rw) nogil

#: Rows ahead whose cache lines a row copy asks for (rows of a batch sit at
#: random slots: each row's first line is a miss, and asking for the next
#: rows' lines early overlaps those misses).
DEF AHEAD = 8


cdef inline void _prefetch(const char* p, Py_ssize_t nbytes, int rw) noexcept nogil:
    cdef Py_ssize_t o = 0
    while o < nbytes:
        FL_PREFETCH(p + o, rw)
        o += 64

cdef object _perf_counter = time.perf_counter
cdef object _allocate_lock = _thread.allocate_lock

#: Guards the futures' done flags, waiter locks and callbacks.
_callbacks_lock = threading.Lock()
cdef object _cb_lock = _callbacks_lock

#: Futures of ``apush`` answered and not yet handed to their event loops: the
#: worker hands each loop its batch's results in one ``call_soon_threadsafe``
#: (one wake-up of the loop per batch, not one per chunk).
from collections import deque
_async_done = deque()
cdef object _async = _async_done


cdef class _Stream:
    """A stream's bookkeeping: its slot, chunks submitted and answered (each
    counter written by one side only: ``submitted`` under the pool's lock by
    submitters, ``answered`` by the worker, so the worker's hot path takes no
    lock), whether it is closing, whether its slot was given back."""
    cdef public object id
    cdef public Py_ssize_t slot, submitted, answered
    cdef public bint closing, freed
    cdef public double last_used
    cdef Py_ssize_t mark                # the last batch formed with this stream

    def __init__(self, sid, Py_ssize_t slot):
        self.id, self.slot = sid, slot
        self.submitted = self.answered = 0
        self.closing = self.freed = False
        self.last_used = time.monotonic()


cdef class PoolFuture:
    """The result of one pushed chunk, to come (what ``submit`` returns).

    A light ``concurrent.futures.Future``: ``result(timeout)``, ``exception``,
    ``done``, ``add_done_callback``; no cancelling (a queued chunk always
    runs).  It is also the pool's queue entry: a push allocates one object
    (and a lock only if someone waits before the result is there).
    ``t0``: when it was queued, ``t_done``: when it was answered
    (``time.perf_counter()``; None before).
    """
    cdef public object stream, chunk, key, t_done, _lock, _value, _error, _callbacks
    cdef public object _aloop, _afut
    cdef public double t0
    cdef public bint _done

    def __init__(self, stream=None, chunk=None, key=None):
        self.stream, self.chunk, self.key = stream, chunk, key
        self.t0 = _perf_counter()

    def done(self):
        """Whether the result (or error) is there."""
        return self._done

    def result(self, timeout=None):
        """The chunk's result (blocking); raises its error."""
        if not self._done:
            with _cb_lock:
                lock = None
                if not self._done:
                    lock = self._lock
                    if lock is None:
                        lock = self._lock = _allocate_lock()
                        lock.acquire()
            if lock is not None:
                if not lock.acquire(True, -1 if timeout is None else timeout):
                    raise TimeoutError(f"no result within {timeout} s")
                lock.release()          # (the next waiter's turn)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout=None):
        """The chunk's error, or None (blocking)."""
        try:
            self.result(timeout)
        except TimeoutError:
            raise
        except BaseException as e:
            return e
        return None

    def add_done_callback(self, fn):
        """Call ``fn(future)`` when done (now, if it is; else from the pool's worker)."""
        with _cb_lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def _finish(self, value, error, t_done=None):
        self.t_done = _perf_counter() if t_done is None else t_done
        self._value, self._error = value, error
        self.chunk = None
        with _cb_lock:
            self._done = True
            cbs, self._callbacks = self._callbacks, None
            lock = self._lock
        if lock is not None:
            lock.release()
        if self._aloop is not None:
            _async.append(self)
        for fn in cbs or ():
            try:
                fn(self)
            except Exception:       # a callback's error is not the chunk's
                pass

    def set_result(self, value):
        self._finish(value, None)

    def set_exception(self, error):
        self._finish(None, error)


cdef inline PoolFuture _refused(error):
    cdef PoolFuture fut = PoolFuture()
    fut._finish(None, error)
    return fut


cdef class PoolCore:
    """What ``StreamPool.submit`` reads, as C fields (the pool's base class).

    ``_fast_shape``/``_fast_dtype``/``_fast_key``: the last single-input
    chunk shape and dtype found valid (set by ``StreamPool._chunk_key``).
    """
    cdef public object _lock, _cv, _queue, _worker, _fast_dtype, _fast_key
    cdef public dict _streams
    cdef public bint _closed
    cdef public Py_ssize_t max_batch
    cdef object _fshape
    cdef int _fnd                       # -1: no fast shape
    cdef cnp.npy_intp _fdims[32]

    def __cinit__(self):
        self._fnd = -1
        self._streams = {}

    @property
    def _fast_shape(self):
        return self._fshape

    @_fast_shape.setter
    def _fast_shape(self, shape):
        self._fnd = -1
        self._fshape = shape
        if shape is None or len(shape) > 32:
            return
        for k in range(len(shape)):
            self._fdims[k] = shape[k]
        self._fnd = len(shape)

    def _set_fast(self, shape, dtype, key):
        """The last shape, dtype and key found valid, set together (in C, under
        the GIL: a submit on another thread sees the old three or the new)."""
        if shape is not None and (len(shape) > 32 or dtype is None):
            shape = None
        self._fnd = -1
        self._fshape, self._fast_dtype, self._fast_key = shape, dtype, key
        if shape is None:
            return
        for k in range(len(shape)):
            self._fdims[k] = shape[k]
        self._fnd = len(shape)

    cdef inline bint _is_fast(self, chunk):
        if not cnp.PyArray_CheckExact(chunk) or self._fnd < 0:
            return False
        cdef cnp.ndarray a = <cnp.ndarray>chunk
        if cnp.PyArray_NDIM(a) != self._fnd or \
                <PyObject*>cnp.PyArray_DESCR(a) != <PyObject*>self._fast_dtype:
            return False
        cdef cnp.npy_intp* d = cnp.PyArray_DIMS(a)
        cdef int k
        for k in range(self._fnd):
            if d[k] != self._fdims[k]:
                return False
        return True

    def submit(self, stream_id, chunk, _aloop=None, _afut=None):
        """Queue a chunk of a stream; returns a :class:`PoolFuture` of its result
        (a dict output name -> array).  A stream's chunks run in the order they
        were submitted."""
        cdef PoolFuture fut
        cdef _Stream st
        cdef PyObject* sp
        cdef Py_ssize_t qn
        if self._is_fast(chunk):        # the last shape and dtype found valid
            arrays, key = (chunk,), self._fast_key   # (one key object: grouping by identity)
        else:
            try:
                arrays, key = self._slow_key(chunk)
            except FastLSTMError as e:
                return _refused(e)
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise FastLSTMError("the StreamPool is closed")
            st_obj = self._streams.get(stream_id)
            if st_obj is None:
                return _refused(InvalidInput(f"StreamPool: no open stream {stream_id!r}"))
            st = <_Stream>st_obj
            st.submitted += 1
            fut = PoolFuture.__new__(PoolFuture)
            fut.stream, fut.chunk, fut.key = st, arrays, key
            fut.t0 = _perf_counter()
            if _aloop is not None:
                fut._aloop, fut._afut = _aloop, _afut
            q = self._queue
            q.append(fut)
            if self._worker is not None:
                qn = len(q)
                if qn == 1 or qn == self.max_batch:
                    self._cv.notify()
        finally:
            lock.release()
        return fut


cdef Py_ssize_t _batch_mark = 0


def form_batch(q, Py_ssize_t max_batch):
    """A batch out of the queue ``q`` (a deque of PoolFuture; under the pool's
    lock): its oldest chunks, at most ``max_batch``, at most one per stream
    (a stream's later chunk stays at the queue's front, in order, for the
    next batch).  Takes only what it returns off the deque: O(batch), however
    long the backlog (slicing the rest into a new deque made a loaded pool
    copy its whole queue per batch: 16% of the time in py-spy at 1024 Silero
    streams once a backlog built up)."""
    global _batch_mark
    cdef Py_ssize_t n = len(q), mark
    cdef list batch = []
    cdef list rest = None
    cdef _Stream st
    _batch_mark += 1
    mark = _batch_mark
    popleft = q.popleft
    while n > 0 and len(batch) < max_batch:
        r = popleft()
        n -= 1
        st = <_Stream?>(<PoolFuture?>r).stream
        if st.mark == mark:             # its earlier chunk runs first
            if rest is None:
                rest = []
            rest.append(r)
        else:
            st.mark = mark
            batch.append(r)
    if rest is not None:
        rest.reverse()
        q.extendleft(rest)
    return batch


def finish_many(list futs, list values, t_done):
    """``PoolFuture._finish`` for a whole batch: one round of the callbacks lock."""
    cdef Py_ssize_t i, n = len(futs)
    cdef PoolFuture f
    if len(values) != n:
        raise FastLSTMError(f"StreamPool: {len(values)} results for {n} chunks")
    wake = later = aloops = None
    with _cb_lock:
        for i in range(n):
            f = <PoolFuture?>futs[i]
            f.t_done = t_done
            f._value = values[i]
            f.chunk = None
            f._done = True
            if f._lock is not None:
                if wake is None:
                    wake = []
                wake.append(f._lock)
            if f._callbacks is not None:
                if later is None:
                    later = []
                later.append(f)
            if f._aloop is not None:
                if aloops is None:
                    aloops = []
                aloops.append(f)
    if wake is not None:
        for lock in wake:
            lock.release()
    if aloops is not None:
        _async.extend(aloops)
    if later is not None:
        for f in later:
            cbs, f._callbacks = f._callbacks, None
            for fn in cbs:
                try:
                    fn(f)
                except Exception:
                    pass


def answered(list batch, double now):
    """Count each of a batch's chunks as answered; returns the streams that are
    closing (their slots may now be given back), or None."""
    cdef Py_ssize_t i
    cdef _Stream st
    closing = None
    for i in range(len(batch)):
        st = <_Stream?>(<PoolFuture?>batch[i]).stream
        st.answered += 1
        st.last_used = now
        if st.closing:
            if closing is None:
                closing = []
            closing.append(st)
    return closing


def same_key(list batch):
    """Whether every chunk of a (non-empty) batch has its first's key object."""
    cdef Py_ssize_t i
    cdef object key = (<PoolFuture?>batch[0]).key
    for i in range(1, len(batch)):
        if (<PoolFuture?>batch[i]).key is not key:
            return False
    return True


def slots_of(list reqs, cnp.ndarray slots):
    """Each chunk's stream slot into ``slots[:n]`` (an intp array)."""
    cdef Py_ssize_t i, n = len(reqs)
    if cnp.PyArray_TYPE(slots) != cnp.NPY_INTP or cnp.PyArray_NDIM(slots) != 1 \
            or not cnp.PyArray_IS_C_CONTIGUOUS(slots) or cnp.PyArray_DIMS(slots)[0] < n:
        raise FastLSTMError("StreamPool: slots must be a contiguous intp array of the batch")
    cdef cnp.npy_intp* s = <cnp.npy_intp*>cnp.PyArray_DATA(slots)
    for i in range(n):
        s[i] = (<_Stream?>(<PoolFuture?>reqs[i]).stream).slot
    return slots


cdef inline Py_ssize_t _row_bytes(cnp.ndarray a, int start):
    cdef Py_ssize_t r = cnp.PyArray_ITEMSIZE(a)
    cdef int k
    for k in range(start, cnp.PyArray_NDIM(a)):
        r *= cnp.PyArray_DIMS(a)[k]
    return r


cdef bint _slots_ok(cnp.ndarray slots, Py_ssize_t n, Py_ssize_t limit):
    if cnp.PyArray_TYPE(slots) != cnp.NPY_INTP or cnp.PyArray_NDIM(slots) != 1 \
            or not cnp.PyArray_IS_C_CONTIGUOUS(slots) or cnp.PyArray_DIMS(slots)[0] < n:
        return False
    cdef cnp.npy_intp* s = <cnp.npy_intp*>cnp.PyArray_DATA(slots)
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] < 0 or s[i] >= limit:
            return False
    return True


def fill_rows(list reqs, Py_ssize_t j, cnp.ndarray buf, Py_ssize_t nb, store,
              cnp.ndarray slots):
    """A batch's input ``buf`` [nb, ...] (C-contiguous): row i is the context
    row ``store[slots[i]]`` (when ``store`` is not None; its bytes lead the
    row, i.e. context along the chunk's first axis) then chunk ``j`` of
    request i (zeros for the padding rows i >= len(reqs)).  Returns False,
    having copied nothing, when an array does not fit (another dtype, a
    non-contiguous chunk, sizes that do not add up, a slot out of range)."""
    cdef Py_ssize_t n = len(reqs), i, row, cb = 0, chb
    cdef char* dst
    cdef char* src = NULL
    cdef cnp.ndarray st, a
    cdef cnp.npy_intp* s
    cdef object chunk
    cdef tuple t
    if nb < n or cnp.PyArray_NDIM(buf) < 1 or not cnp.PyArray_IS_C_CONTIGUOUS(buf) \
            or not cnp.PyArray_ISWRITEABLE(buf) or cnp.PyArray_DIMS(buf)[0] != nb:
        return False
    row = _row_bytes(buf, 1)
    if store is not None:
        if not cnp.PyArray_CheckExact(store):
            return False
        st = <cnp.ndarray>store
        if cnp.PyArray_NDIM(st) < 1 or not cnp.PyArray_IS_C_CONTIGUOUS(st) or \
                not cnp.PyArray_EquivArrTypes(st, buf):
            return False
        cb = _row_bytes(st, 1)
        if not _slots_ok(slots, nb, cnp.PyArray_DIMS(st)[0]):
            return False
        src = <char*>cnp.PyArray_DATA(st)
    chb = row - cb
    if chb < 0:
        return False
    for i in range(n):              # every check before any copy
        t = <tuple?>(<PoolFuture?>reqs[i]).chunk
        if not 0 <= j < PyTuple_GET_SIZE(t):
            return False
        chunk = t[j]
        if not cnp.PyArray_Check(chunk):
            return False
        a = <cnp.ndarray>chunk
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_NBYTES(a) != chb or \
                not cnp.PyArray_EquivArrTypes(a, buf):
            return False
    dst = <char*>cnp.PyArray_DATA(buf)
    s = <cnp.npy_intp*>cnp.PyArray_DATA(slots)
    for i in range(nb):
        if cb:
            if i + AHEAD < nb:
                _prefetch(src + s[i + AHEAD] * cb, cb, 0)
            memcpy(dst + i * row, src + s[i] * cb, cb)
        if i < n:
            a = <cnp.ndarray>(<tuple>(<PoolFuture>reqs[i]).chunk)[j]
            memcpy(dst + i * row + cb, cnp.PyArray_DATA(a), chb)
        else:
            memset(dst + i * row + cb, 0, chb)
    return True


cdef bint _planes(cnp.ndarray big, cnp.ndarray small, int ax, Py_ssize_t* planes,
                  Py_ssize_t* rb):
    """Whether ``big`` and ``small`` are C-contiguous arrays of one dtype and
    one shape but for axis ``ax``; their planes (the dims before ``ax``) and
    row bytes (the dims after it)."""
    cdef int k, nd = cnp.PyArray_NDIM(big)
    if cnp.PyArray_NDIM(small) != nd or not 0 <= ax < nd or \
            not cnp.PyArray_IS_C_CONTIGUOUS(big) or not cnp.PyArray_IS_C_CONTIGUOUS(small) \
            or not cnp.PyArray_EquivArrTypes(big, small):
        return False
    planes[0] = 1
    for k in range(nd):
        if k != ax and cnp.PyArray_DIMS(big)[k] != cnp.PyArray_DIMS(small)[k]:
            return False
        if k < ax:
            planes[0] *= cnp.PyArray_DIMS(big)[k]
    rb[0] = _row_bytes(big, ax + 1)
    return True


def take_rows(cnp.ndarray store, cnp.ndarray slots, cnp.ndarray out, int ax):
    """``out[..., i, ...] = store[..., slots[i], ...]`` along axis ``ax`` for
    every row of ``out`` (``np.take(store, slots, axis=ax, out=out)`` as one
    memcpy per row).  False, nothing copied, when the arrays do not fit."""
    cdef Py_ssize_t planes, rb, p, i, m, cap
    if not cnp.PyArray_ISWRITEABLE(out) or not _planes(store, out, ax, &planes, &rb):
        return False
    m = cnp.PyArray_DIMS(out)[ax]
    cap = cnp.PyArray_DIMS(store)[ax]
    if not _slots_ok(slots, m, cap):
        return False
    cdef cnp.npy_intp* s = <cnp.npy_intp*>cnp.PyArray_DATA(slots)
    cdef char* src = <char*>cnp.PyArray_DATA(store)
    cdef char* dst = <char*>cnp.PyArray_DATA(out)
    for p in range(planes):
        for i in range(m):
            if i + AHEAD < m:
                _prefetch(src + (p * cap + s[i + AHEAD]) * rb, rb, 0)
            memcpy(dst + (p * m + i) * rb, src + (p * cap + s[i]) * rb, rb)
    return True


def put_rows(cnp.ndarray store, cnp.ndarray slots, Py_ssize_t n, cnp.ndarray new, int ax):
    """``store[..., slots[i], ...] = new[..., i, ...]`` along axis ``ax`` for
    i < n (the first n rows of ``new``).  False, nothing copied, when the
    arrays do not fit (``new`` not C-contiguous, another dtype or shape)."""
    cdef Py_ssize_t planes, rb, p, i, m, cap
    if not cnp.PyArray_ISWRITEABLE(store) or not _planes(store, new, ax, &planes, &rb):
        return False
    m = cnp.PyArray_DIMS(new)[ax]
    cap = cnp.PyArray_DIMS(store)[ax]
    if n > m or not _slots_ok(slots, n, cap):
        return False
    cdef cnp.npy_intp* s = <cnp.npy_intp*>cnp.PyArray_DATA(slots)
    cdef char* dst = <char*>cnp.PyArray_DATA(store)
    cdef char* src = <char*>cnp.PyArray_DATA(new)
    for p in range(planes):
        for i in range(n):
            if i + AHEAD < n:
                _prefetch(dst + (p * cap + s[i + AHEAD]) * rb, rb, 1)
            memcpy(dst + (p * cap + s[i]) * rb, src + (p * m + i) * rb, rb)
    return True


def put_tails(cnp.ndarray store, cnp.ndarray slots, Py_ssize_t n, cnp.ndarray buf):
    """Context back: ``store[slots[i]]`` = the last bytes of row i of ``buf``
    (as many as a row of ``store``; context along the chunk's first axis),
    i < n.  False, nothing copied, when the arrays do not fit."""
    cdef Py_ssize_t i, row, cb
    if not cnp.PyArray_ISWRITEABLE(store) or cnp.PyArray_NDIM(store) < 1 or \
            cnp.PyArray_NDIM(buf) < 1 or not cnp.PyArray_IS_C_CONTIGUOUS(store) or \
            not cnp.PyArray_IS_C_CONTIGUOUS(buf) or cnp.PyArray_DIMS(buf)[0] < n or \
            not cnp.PyArray_EquivArrTypes(store, buf):
        return False
    row, cb = _row_bytes(buf, 1), _row_bytes(store, 1)
    if cb > row or not _slots_ok(slots, n, cnp.PyArray_DIMS(store)[0]):
        return False
    cdef cnp.npy_intp* s = <cnp.npy_intp*>cnp.PyArray_DATA(slots)
    cdef char* dst = <char*>cnp.PyArray_DATA(store)
    cdef char* src = <char*>cnp.PyArray_DATA(buf)
    for i in range(n):
        if i + AHEAD < n:
            _prefetch(dst + s[i + AHEAD] * cb, cb, 1)
        memcpy(dst + s[i] * cb, src + i * row + row - cb, cb)
    return True


def dicts_of(list names, list rows, Py_ssize_t n):
    """Each stream's result: for i < n, ``{names[k]: rows[k][i]}``, ``rows[k]``
    a list of output k's rows (``list(arr)``: numpy makes each view in C as
    fast as anything here, timed 145 ns a row either way)."""
    cdef Py_ssize_t i, k, m = len(names)
    cdef list col
    if len(rows) != m:
        raise FastLSTMError("StreamPool: one list of rows per output")
    for k in range(m):
        col = <list?>rows[k]
        if len(col) < n:
            raise FastLSTMError("StreamPool: fewer rows than chunks")
    cdef list out = PyList_New(n)
    cdef dict d
    for i in range(n):
        d = {}
        for k in range(m):
            d[names[k]] = (<list>rows[k])[i]
        Py_INCREF(d)
        PyList_SET_ITEM(out, i, d)
    return out
