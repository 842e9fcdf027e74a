"""The ordinary ops around recurrent layers in exported graphs, on numpy.

Each op is a function ``fn(node, inputs, n_outputs) -> list of outputs`` plus
what import validates: the op versions it implements, its attributes and how
many inputs and outputs it takes.  These ops move and reshape small tensors
(shapes, states, a classifier head), so numpy is the right tool; the heavy
work is in the recurrent kernels.  Where an op's form changed across opsets
(axes as attribute or as input, Slice's attributes becoming inputs, ...) the
function reads ``node.since_version``.
"""
from dataclasses import dataclass

import numpy as np
from numba import njit

from .. import config
from ..errors import InvalidInput, UnsupportedOp
from ..ir import ELEM_TYPES

ALL_VERSIONS = tuple(range(1, 26))


@dataclass(frozen=True)
class GlueOp:
    fn: object
    versions: tuple
    attrs: frozenset
    inputs: tuple       # (min, max)
    outputs: tuple      # (min, max)
    foldable: bool = True


OPS = {}


def op(name, versions=ALL_VERSIONS, attrs=(), inputs=(1, 1), outputs=(1, 1), foldable=True):
    def deco(fn):
        OPS[name] = GlueOp(fn, tuple(versions), frozenset(attrs), inputs, outputs, foldable)
        return fn
    return deco


def _attr(node, name, default=None):
    return node.attrs.get(name, default)


def _axes_arg(node, ins, pos, attr_until):
    """Axes from the attribute (op versions before ``attr_until``) or input ``pos``."""
    if node.since_version < attr_until:
        a = _attr(node, "axes")
        return None if a is None else [int(v) for v in a]
    if len(ins) > pos and ins[pos] is not None:
        return [int(v) for v in np.asarray(ins[pos]).reshape(-1)]
    return None


def _norm_axes(axes, rank, node):
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise InvalidInput(f"{node.describe()}: axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    return out


@op("Gather", attrs=["axis"], inputs=(2, 2))
def gather(node, ins, n):
    data, idx = ins
    axis = int(_attr(node, "axis", 0))
    try:    # np.take checks the range itself (and counts negatives from the end, as ONNX)
        return [np.take(data, idx, axis=axis)]
    except (IndexError, TypeError):
        size = data.shape[axis] if -data.ndim <= axis < data.ndim else "?"
        raise InvalidInput(f"{node.describe()}: index out of range [-{size}, {size}) "
                           f"or not an integer tensor") from None


@op("MatMul", inputs=(2, 2))
def matmul(node, ins, n):
    return [np.matmul(ins[0], ins[1])]


@op("Gemm", attrs=["alpha", "beta", "transA", "transB", "broadcast"], inputs=(2, 3))
def gemm(node, ins, n):
    a, b = ins[0], ins[1]
    if _attr(node, "transA", 0):
        a = a.T
    if _attr(node, "transB", 0):
        b = b.T
    y = np.matmul(a, b)
    alpha = _attr(node, "alpha", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if len(ins) > 2 and ins[2] is not None:
        beta = _attr(node, "beta", 1.0)
        c = ins[2] if beta == 1.0 else ins[2] * np.asarray(beta, ins[2].dtype)
        y = y + c
    return [y]


def _binary(name, fn):
    @op(name, attrs=["broadcast", "axis"], inputs=(2, 2))
    def run(node, ins, n):
        if _attr(node, "broadcast") is not None and _attr(node, "axis") is not None:
            raise UnsupportedOp(f"{node.describe()}: legacy broadcast with axis")
        return [fn(ins[0], ins[1])]
    return run


def _div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return (np.trunc(a / b)).astype(a.dtype)
    return np.divide(a, b)


_binary("Add", np.add)
_binary("Sub", np.subtract)
_binary("Mul", np.multiply)
_binary("Div", _div)
_binary("Equal", np.equal)
_binary("Less", np.less)
_binary("Greater", np.greater)


@op("Relu")
def relu(node, ins, n):
    x = ins[0]
    return [np.maximum(x, np.zeros((), x.dtype))]


@op("Tanh")
def tanh(node, ins, n):
    return [np.tanh(ins[0])]


@op("Sigmoid")
def sigmoid(node, ins, n):
    x = ins[0]
    half = np.asarray(0.5, x.dtype)
    return [half * (np.tanh(half * x) + np.asarray(1, x.dtype))]


def _softmax(node, x, log):
    if node.since_version < 13:
        axis = int(_attr(node, "axis", 1)) % max(x.ndim, 1)
        shape = x.shape
        x2 = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
        return _softmax_axis(x2, 1, log).reshape(shape)
    return _softmax_axis(x, int(_attr(node, "axis", -1)), log)


@njit(cache=config.NUMBA_CACHE, nogil=True)
def _softmax_rows(x, out, log):
    """Softmax or log-softmax of each row of a 2-D array (one pass of numpy
    calls per row would cost more than the arithmetic for the small heads of
    exported models)."""
    for i in range(x.shape[0]):
        m = x[i, 0]
        for j in range(1, x.shape[1]):
            m = max(m, x[i, j])
        s = 0.0
        for j in range(x.shape[1]):
            s += np.exp(np.float64(x[i, j] - m))
        if log:
            ls = np.log(s)
            for j in range(x.shape[1]):
                out[i, j] = x[i, j] - m - ls
        else:
            for j in range(x.shape[1]):
                out[i, j] = np.exp(np.float64(x[i, j] - m)) / s


def _softmax_axis(x, axis, log):
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


@op("Softmax", attrs=["axis"])
def softmax(node, ins, n):
    return [_softmax(node, ins[0], False)]


@op("LogSoftmax", attrs=["axis"])
def logsoftmax(node, ins, n):
    return [_softmax(node, ins[0], True)]


@op("Transpose", attrs=["perm"])
def transpose(node, ins, n):
    perm = _attr(node, "perm")
    return [np.transpose(ins[0], None if perm is None else [int(p) for p in perm])]


@op("Reshape", attrs=["allowzero", "shape"], inputs=(1, 2))
def reshape(node, ins, n):
    x = ins[0]
    if node.since_version < 5:
        shape = list(_attr(node, "shape"))
    else:
        shape = ins[1].reshape(-1).tolist()
    if not _attr(node, "allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    try:
        return [x.reshape(shape)]
    except ValueError:
        raise InvalidInput(f"{node.describe()}: cannot reshape {x.shape} to {shape}") from None


@op("Squeeze", attrs=["axes"], inputs=(1, 2))
def squeeze(node, ins, n):
    x = ins[0]
    axes = _axes_arg(node, ins, 1, 13)
    if axes is None:
        return [np.squeeze(x)]
    axes = _norm_axes(axes, x.ndim, node)
    for a in axes:
        if x.shape[a] != 1:
            raise InvalidInput(f"{node.describe()}: cannot squeeze axis {a} of size "
                               f"{x.shape[a]}")
    return [np.squeeze(x, axis=tuple(axes))]


@op("Unsqueeze", attrs=["axes"], inputs=(1, 2))
def unsqueeze(node, ins, n):
    x = ins[0]
    axes = _axes_arg(node, ins, 1, 13)
    if axes is None:
        raise InvalidInput(f"{node.describe()}: axes are required")
    rank = x.ndim + len(axes)
    axes = sorted(_norm_axes(axes, rank, node))
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [x.reshape(shape)]


@op("Concat", attrs=["axis"], inputs=(1, 1 << 20))
def concat(node, ins, n):
    return [np.concatenate(ins, axis=int(_attr(node, "axis", 0)))]


@op("Slice", attrs=["starts", "ends", "axes"], inputs=(1, 5))
def slice_(node, ins, n):
    x = ins[0]
    if node.since_version < 10:
        starts, ends = _attr(node, "starts"), _attr(node, "ends")
        axes, steps = _attr(node, "axes"), None
    else:
        starts, ends = ins[1].reshape(-1), ins[2].reshape(-1)
        axes = ins[3].reshape(-1) if len(ins) > 3 and ins[3] is not None else None
        steps = ins[4].reshape(-1) if len(ins) > 4 and ins[4] is not None else None
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    axes = _norm_axes(axes, x.ndim, node)
    index = [slice(None)] * x.ndim
    for k, a in enumerate(axes):
        step = 1 if steps is None else int(steps[k])
        if step == 0:
            raise InvalidInput(f"{node.describe()}: slice step 0")
        s, e = int(starts[k]), int(ends[k])
        dim = x.shape[a]
        # clamp as ONNX does (numpy's own clamping differs for huge negatives)
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if step > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, -1), dim - 1), min(max(e, -1), dim - 1)
        index[a] = slice(s, None if (step < 0 and e < 0) else e, step)
    return [x[tuple(index)]]


@op("Split", attrs=["axis", "split", "num_outputs"], inputs=(1, 2), outputs=(1, 1 << 20))
def split(node, ins, n):
    x = ins[0]
    axis = int(_attr(node, "axis", 0)) % x.ndim
    if node.since_version < 13:
        sizes = _attr(node, "split")
    else:
        sizes = ins[1].reshape(-1).tolist() if len(ins) > 1 and ins[1] is not None else None
    if sizes is None:
        parts = n if _attr(node, "num_outputs") is None else int(_attr(node, "num_outputs"))
        dim = x.shape[axis]
        step = -(-dim // parts)
        sizes = [min(step, dim - k * step) for k in range(parts)]
    if sum(sizes) != x.shape[axis]:
        raise InvalidInput(f"{node.describe()}: split sizes {sizes} do not add up to "
                           f"{x.shape[axis]}")
    return np.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis)


@op("Shape", attrs=["start", "end"])
def shape(node, ins, n):
    s = np.array(ins[0].shape, np.int64)
    start, end = _attr(node, "start", 0), _attr(node, "end")
    return [s[start:end]]


@op("Size")
def size(node, ins, n):
    return [np.array(ins[0].size, np.int64)]


@op("ConstantOfShape", attrs=["value"])
def constant_of_shape(node, ins, n):
    v = _attr(node, "value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    dims = [int(d) for d in np.asarray(ins[0]).reshape(-1)]
    if any(d < 0 for d in dims):
        raise InvalidInput(f"{node.describe()}: negative dimension in {dims}")
    return [np.full(dims, v[0], v.dtype)]


@op("Expand", inputs=(2, 2))
def expand(node, ins, n):
    x, shp = ins
    try:
        target = np.broadcast_shapes(x.shape, tuple(int(d) for d in shp.reshape(-1)))
    except ValueError:
        raise InvalidInput(f"{node.describe()}: cannot expand {x.shape} to "
                           f"{shp.tolist()}") from None
    return [np.array(np.broadcast_to(x, target))]


@op("Cast", attrs=["to", "saturate", "round_mode"])
def cast(node, ins, n):
    to = int(_attr(node, "to"))
    if to not in ELEM_TYPES:
        raise UnsupportedOp(f"{node.describe()}: cast to element type {to}", node.op_type,
                            node.domain, node.since_version, node.name)
    return [ins[0].astype(ELEM_TYPES[to][0])]


@op("Identity")
def identity(node, ins, n):
    return [ins[0]]


@op("Dropout", attrs=["ratio", "is_test", "seed"], inputs=(1, 3), outputs=(1, 2))
def dropout(node, ins, n):
    if len(ins) > 2 and ins[2] is not None and bool(np.asarray(ins[2])):
        raise UnsupportedOp(f"{node.describe()}: training_mode=True (fastlstm runs inference)",
                            node.op_type, node.domain, node.since_version, node.name)
    out = [ins[0]]
    if n > 1:
        out.append(np.ones(ins[0].shape, np.bool_))
    return out


@op("Flatten", attrs=["axis"])
def flatten(node, ins, n):
    x = ins[0]
    axis = int(_attr(node, "axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def _reduce(name, fn):
    @op(name, attrs=["axes", "keepdims", "noop_with_empty_axes"], inputs=(1, 2))
    def run(node, ins, n):
        x = ins[0]
        attr_until = 18 if name != "ReduceSum" else 13
        axes = _axes_arg(node, ins, 1, attr_until)
        keep = bool(_attr(node, "keepdims", 1))
        if not axes:
            if _attr(node, "noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        axes = tuple(_norm_axes(axes, x.ndim, node))
        return [np.asarray(fn(x, axis=axes, keepdims=keep)).astype(x.dtype, copy=False)]
    return run


def _mean(x, axis, keepdims):
    # np.mean goes through Python-level helpers (several microseconds on the small
    # tensors of a model head); a sum and a division are two C calls.
    count = 1
    for a in axis:
        count *= x.shape[a]
    total = np.add.reduce(x, axis=axis, keepdims=keepdims)
    return total / np.asarray(count, total.dtype) if count else total * np.nan


_reduce("ReduceMean", _mean)
_reduce("ReduceSum", np.sum)
_reduce("ReduceMax", np.max)
_reduce("ReduceProd", np.prod)


@op("ArgMax", attrs=["axis", "keepdims", "select_last_index"])
def argmax(node, ins, n):
    x = ins[0]
    axis = int(_attr(node, "axis", 0)) % x.ndim
    if _attr(node, "select_last_index", 0):
        idx = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        idx = np.argmax(x, axis=axis)
    idx = idx.astype(np.int64)
    return [np.expand_dims(idx, axis) if _attr(node, "keepdims", 1) else idx]


@op("Where", inputs=(3, 3))
def where(node, ins, n):
    return [np.where(ins[0], ins[1], ins[2])]


@op("Not")
def not_(node, ins, n):
    return [np.logical_not(ins[0])]


@op("Range", inputs=(3, 3))
def range_(node, ins, n):
    start, limit, delta = (np.asarray(v).reshape(()) for v in ins)
    if delta == 0:
        raise InvalidInput(f"{node.describe()}: delta is 0")
    return [np.arange(start, limit, delta, dtype=start.dtype)]


@op("TopK", attrs=["axis", "largest", "sorted"], inputs=(2, 2), outputs=(2, 2))
def topk(node, ins, n):
    x = ins[0]
    k = int(np.asarray(ins[1]).reshape(-1)[0]) if node.since_version >= 10 else \
        int(_attr(node, "k"))
    axis = int(_attr(node, "axis", -1)) % x.ndim
    if not 0 <= k <= x.shape[axis]:
        raise InvalidInput(f"{node.describe()}: k={k} out of range")
    largest = _attr(node, "largest", 1)
    key = -x if largest else x
    # stable sort: equal values keep index order, as onnxruntime does
    idx = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


@op("ScatterElements", attrs=["axis", "reduction"], inputs=(3, 3))
def scatter_elements(node, ins, n):
    data, idx, upd = ins
    if _attr(node, "reduction", "none") not in ("none", None):
        raise UnsupportedOp(f"{node.describe()}: reduction={_attr(node, 'reduction')}",
                            node.op_type, node.domain, node.since_version, node.name)
    axis = int(_attr(node, "axis", 0)) % data.ndim
    out = np.array(data)
    size = data.shape[axis]
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise InvalidInput(f"{node.describe()}: index out of range")
    np.put_along_axis(out, np.where(idx < 0, idx + size, idx).astype(np.int64), upd, axis=axis)
    return [out]


@op("GatherElements", attrs=["axis"], inputs=(2, 2))
def gather_elements(node, ins, n):
    data, idx = ins
    axis = int(_attr(node, "axis", 0)) % data.ndim
    size = data.shape[axis]
    return [np.take_along_axis(data, np.where(idx < 0, idx + size, idx).astype(np.int64),
                               axis=axis)]
