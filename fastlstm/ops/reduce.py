"""Reductions and their relatives: Reduce*, ArgMax, TopK, Softmax, LogSoftmax."""
import numpy as np
from numba import njit

from .. import config
from ..errors import InvalidInput
from ..kernels.activations import fexp
from .shape import axes_attr, axes_input, norm_axes
from .table import attr, op


def _reduce_run(node, x, axes, fn):
    keep = bool(attr(node, "keepdims", 1))
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.ndim))
    axes = tuple(norm_axes(axes, x.ndim, node))
    return [np.asarray(fn(x, axis=axes, keepdims=keep)).astype(x.dtype, copy=False)]


def _mean(x, axis, keepdims):
    # np.mean goes through Python-level helpers (several microseconds on the small
    # tensors of a model head); a sum and a division are two C calls.
    count = 1
    for a in axis:
        count *= x.shape[a]
    total = np.add.reduce(x, axis=axis, keepdims=keepdims)
    return total / np.asarray(count, total.dtype) if count else total * np.nan


_UFUNC_REDUCE = {"ReduceSum": np.add.reduce, "ReduceMax": np.maximum.reduce,
                 "ReduceMin": np.minimum.reduce, "ReduceProd": np.multiply.reduce}


def _bind_reduce(node, consts, rec):
    """Fixed axes and shape: one ufunc reduction (a division for the mean)."""
    x = rec[node.inputs[0]]
    if node.op_type not in _UFUNC_REDUCE and node.op_type != "ReduceMean":
        return None
    if len(node.inputs) > 1 and node.inputs[1]:
        if node.inputs[1] not in consts:
            return None
        axes = [int(v) for v in np.asarray(consts[node.inputs[1]]).reshape(-1)]
    else:
        axes = axes_attr(node)
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return None
        axes = list(range(x.ndim))
    axes = tuple(norm_axes(axes, x.ndim, node))
    keep = bool(attr(node, "keepdims", 1))
    if x.size and all(x.shape[a] == 1 for a in axes) and x.dtype.kind == "f":
        # every reduced axis has one element: the result is the input, reshaped
        shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape)) if keep else \
            tuple(d for a, d in enumerate(x.shape) if a not in axes)
        return lambda v, *rest: v.reshape(shape)
    if node.op_type == "ReduceMean":
        count = 1
        for a in axes:
            count *= x.shape[a]
        if not count or x.dtype.kind != "f":
            return None
        c = np.asarray(count, x.dtype)
        return lambda v, *rest: np.add.reduce(v, axis=axes, keepdims=keep) / c
    if x.size == 0:
        return None
    red = _UFUNC_REDUCE[node.op_type]
    return lambda v, *rest: red(v, axis=axes, keepdims=keep)


def _reduce(name, fn, axes_input_since):
    def run_attr(node, ins, n):
        return _reduce_run(node, ins[0], axes_attr(node), fn)

    def run_input(node, ins, n):
        return _reduce_run(node, ins[0], axes_input(ins, 1), fn)

    for f, form in ((run_attr, "attribute"), (run_input, "input")):
        f.__doc__ = f"{name} over axes given as an {form}."
        f.__module__ = __name__
    op(name, since=1, attrs=["axes", "keepdims"], bind=_bind_reduce)(run_attr)
    op(name, since=axes_input_since, attrs=["keepdims", "noop_with_empty_axes"],
       inputs=(1, 2), shape_params=(1,))(run_input)


_reduce("ReduceMean", _mean, 18)
_reduce("ReduceSum", np.sum, 13)
def _extreme(fn, largest):
    """np.max/np.min that give the identity over nothing (the type's lowest or
    largest value), as onnxruntime and the spec from opset 18 do."""
    def run(x, axis, keepdims):
        if x.size and all(x.shape[a] for a in axis):
            return fn(x, axis=axis, keepdims=keepdims)
        if x.dtype == np.bool_:
            init = not largest
        elif x.dtype.kind == "f":
            init = np.inf if not largest else -np.inf
        else:
            info = np.iinfo(x.dtype)
            init = info.max if not largest else info.min
        return fn(x, axis=axis, keepdims=keepdims, initial=init)
    return run


_reduce("ReduceMax", _extreme(np.max, True), 18)
_reduce("ReduceMin", _extreme(np.min, False), 18)
_reduce("ReduceProd", np.prod, 18)


@op("ArgMax", since=1, attrs=["axis", "keepdims", "select_last_index"])
def argmax(node, ins, n):
    """Index of the largest value along an axis (first or last of ties)."""
    x = ins[0]
    axis = int(attr(node, "axis", 0)) % x.ndim
    if attr(node, "select_last_index", 0):
        idx = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        idx = np.argmax(x, axis=axis)
    idx = idx.astype(np.int64)
    return [np.expand_dims(idx, axis) if attr(node, "keepdims", 1) else idx]


def _topk(node, x, k):
    axis = int(attr(node, "axis", -1)) % x.ndim
    if not 0 <= k <= x.shape[axis]:
        raise InvalidInput(f"{node.describe()}: k={k} out of range")
    key = -x if attr(node, "largest", 1) else x
    # stable sort: equal values keep index order, as onnxruntime does
    idx = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


@op("TopK", since=1, attrs=["axis", "k"], outputs=(2, 2))
def topk_1(node, ins, n):
    """The k largest values and their indices (k as an attribute)."""
    return _topk(node, ins[0], int(attr(node, "k")))


@op("TopK", since=10, attrs=["axis", "largest", "sorted"], inputs=(2, 2), outputs=(2, 2),
    shape_params=(1,))
def topk_10(node, ins, n):
    """The k largest (or smallest) values and their indices (k as an input)."""
    return _topk(node, ins[0], int(np.asarray(ins[1]).reshape(-1)[0]))


@njit(**config.jit_options())
def _softmax_rows(x, out, log):
    """Softmax or log-softmax of each row of a 2-D float32 array, in float32
    (as onnxruntime).  The exponentials are the kernels' vectorizable
    ``fexp`` (relative error <= 3.4e-7), computed into ``out`` first so the
    loop vectorizes; a libm exp per element cost 84 us on the speech model's
    [250, 29] head."""
    n = x.shape[1]
    for i in range(x.shape[0]):
        xr = x[i]           # row views: LLVM vectorizes loops over a view's index
        orow = out[i]
        m = xr[0]
        for j in range(1, n):
            m = max(m, xr[j])
        for j in range(n):
            orow[j] = fexp(xr[j] - m)
        s = np.float32(0)
        for j in range(n):
            s += orow[j]
        if log:
            ls = np.float32(np.log(s))
            for j in range(n):
                orow[j] = xr[j] - m - ls
        else:
            r = np.float32(1) / s
            for j in range(n):
                orow[j] = orow[j] * r


def softmax_axis(x, axis, log):
    """(Log-)softmax of ``x`` along one axis."""
    if x.dtype == np.float32 and x.ndim >= 1 and axis in (-1, x.ndim - 1) and x.size:
        x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        out = np.empty_like(x2)
        _softmax_rows(x2, out, log)
        return out.reshape(x.shape)
    m = np.max(x, axis=axis, keepdims=True)
    e = x - m
    if log:
        return e - np.log(np.sum(np.exp(e), axis=axis, keepdims=True))
    e = np.exp(e)
    return e / np.sum(e, axis=axis, keepdims=True)


def _softmax_2d(node, x, log):
    # before opset 13 the input is coerced to 2-D at ``axis``
    axis = int(attr(node, "axis", 1)) % max(x.ndim, 1)
    shape = x.shape
    x2 = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
    return softmax_axis(x2, 1, log).reshape(shape)


def _softmax(name, log):
    def coerced(node, ins, n):
        return [_softmax_2d(node, ins[0], log)]

    def axis(node, ins, n):
        return [softmax_axis(ins[0], int(attr(node, "axis", -1)), log)]

    def bind(node, consts, rec):
        x = rec.get(node.inputs[0])
        if not isinstance(x, np.ndarray):
            return None
        if node.since_version < 13:
            return lambda x: _softmax_2d(node, x, log)
        ax = int(attr(node, "axis", -1))
        return lambda x: softmax_axis(x, ax, log)

    coerced.__doc__ = f"{name} over the input flattened to 2-D at axis (before opset 13)."
    axis.__doc__ = f"{name} along one axis."
    coerced.__module__ = axis.__module__ = __name__
    op(name, since=1, attrs=["axis"], bind=bind)(coerced)
    op(name, since=13, attrs=["axis"], bind=bind)(axis)


_softmax("Softmax", False)
_softmax("LogSoftmax", True)
