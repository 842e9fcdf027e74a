"""Size limits on what a model can make fastlstm allocate.

A model file is data, but some ops allocate what their input *values* say:
ConstantOfShape([30000, 30000]) in a 191-byte file asks for 3.6 GB.  Before
allocating an array whose size comes from a model (a constant folded at load,
a buffer an op plans, a stream's state), fastlstm checks it against a limit:
1 GiB per array by default, far above what real recurrent models use, raised
with ``SessionOptions.max_tensor_bytes``.  Over the limit, loading fails with
``InvalidModel`` (a folded constant: the model itself asks for it) or a run
with ``InvalidInput`` (the fed values or shapes ask for it), naming the node
and the size, before anything is allocated.

The limit in force is per thread of control (a context variable), so that
sessions with different limits can load at once; ``InferenceSession`` sets it
around loading and around each run.
"""
import contextvars
from contextlib import contextmanager

import numpy as np

from .errors import InvalidInput, InvalidModel

#: Default largest array, in bytes, that a model may make fastlstm allocate.
DEFAULT_MAX_TENSOR_BYTES = 1 << 30

_LIMIT = contextvars.ContextVar("fastlstm_max_tensor_bytes", default=DEFAULT_MAX_TENSOR_BYTES)
_AT_LOAD = contextvars.ContextVar("fastlstm_at_load", default=False)


def current_limit():
    """The largest array (bytes) allowed in this context."""
    return _LIMIT.get()


def validate_limit(value):
    """``value`` as a limit in bytes (an int >= 1), or InvalidInput saying what is allowed."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInput(f"max_tensor_bytes must be an int >= 1 (bytes), got {value!r}")
    return int(value)


@contextmanager
def limit(max_bytes=None, loading=False):
    """Within the block, arrays are limited to ``max_bytes`` (None: the default).

    ``loading``: errors are InvalidModel (the model asks for the array), not
    InvalidInput.
    """
    t1 = _LIMIT.set(DEFAULT_MAX_TENSOR_BYTES if max_bytes is None else validate_limit(max_bytes))
    t2 = _AT_LOAD.set(bool(loading))
    try:
        yield
    finally:
        _AT_LOAD.reset(t2)
        _LIMIT.reset(t1)


def _fmt(nbytes):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def check_bytes(nbytes, what, node=None):
    """Refuse an allocation of ``nbytes`` over the limit; ``what`` says what it is for.

    Raises InvalidModel while a model loads, else InvalidInput; the message
    names the node (an ir.Node, or a string) when given.
    """
    cap = _LIMIT.get()
    if nbytes > cap:
        where = "" if node is None else (f"{node.describe()}: " if hasattr(node, "describe")
                                         else f"{node}: ")
        cls = InvalidModel if _AT_LOAD.get() else InvalidInput
        raise cls(f"{where}{what} would take {_fmt(nbytes)}, over the limit of {_fmt(cap)} "
                  f"per array (SessionOptions.max_tensor_bytes raises it)")


def error_class():
    """The error to raise for a refused allocation here: InvalidModel while a
    model loads (the model asks for it), else InvalidInput (the run's inputs do)."""
    return InvalidModel if _AT_LOAD.get() else InvalidInput


def check_broadcast(arrays, node=None, what="the output"):
    """Refuse the numpy broadcast of ``arrays`` over the limit.

    Cheap in the common case: the product of the arrays' sizes bounds the
    broadcast's size, and only when that bound is over the limit is the
    shape computed.  Shapes that do not broadcast are left to the op to report.
    """
    bound = 8                   # (the widest element fastlstm handles)
    for a in arrays:
        bound *= a.size
    if bound <= _LIMIT.get():
        return
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        return
    check_shape(shape, np.result_type(*arrays), node, what)


def check_matmul(a, b, node=None, what="the product"):
    """Refuse ``a @ b`` (numpy's batching rules) over the limit, before computing it."""
    if a.size * b.size * 8 <= _LIMIT.get() or a.ndim == 0 or b.ndim == 0:
        return
    sa = a.shape if a.ndim > 1 else (1,) + a.shape
    sb = b.shape if b.ndim > 1 else b.shape + (1,)
    try:
        batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        return
    check_shape(batch + (sa[-2], sb[-1]), np.result_type(a, b), node, what)


def check_shape(shape, dtype, node=None, what="the output"):
    """Refuse an array of ``shape`` and ``dtype`` over the limit, before allocating it.

    Negative sizes count as 0 (numpy refuses them itself).  Python ints are
    used so that huge shapes cannot overflow.
    """
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    check_bytes(n * np.dtype(dtype).itemsize, f"{what} of shape {tuple(int(d) for d in shape)}",
                node)
    return shape
