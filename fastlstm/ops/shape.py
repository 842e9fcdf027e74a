"""Shape and indexing ops: reshape, slice, concatenate, gather, build shapes.

These move and select elements of small tensors (shapes, states, heads), so
numpy is the tool.  Inputs listed in ``shape_params`` set the output's shape by
their values; the executor needs them known to cache or specialise a run.
"""
import numpy as np

from ..errors import InvalidInput
from .table import attr, op


def axes_input(ins, pos):
    """Axes given as input ``pos`` (None when absent)."""
    if len(ins) > pos and ins[pos] is not None:
        return [int(v) for v in np.asarray(ins[pos]).reshape(-1)]
    return None


def axes_attr(node):
    a = attr(node, "axes")
    return None if a is None else [int(v) for v in a]


def norm_axes(axes, rank, node):
    """Axes in [0, rank), or InvalidInput naming the node."""
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise InvalidInput(f"{node.describe()}: axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    return out


@op("Gather", since=1, attrs=["axis"], inputs=(2, 2), zero_preserving=True)
def gather(node, ins, n):
    """Take slices along an axis by index (negative indices count from the end)."""
    data, idx = ins
    axis = int(attr(node, "axis", 0))
    try:    # np.take checks the range itself (and counts negatives from the end, as ONNX)
        return [np.take(data, idx, axis=axis)]
    except (IndexError, TypeError):
        size = data.shape[axis] if -data.ndim <= axis < data.ndim else "?"
        raise InvalidInput(f"{node.describe()}: index out of range [-{size}, {size}) "
                           f"or not an integer tensor") from None


@op("GatherElements", since=11, attrs=["axis"], inputs=(2, 2))
def gather_elements(node, ins, n):
    """Pick one element per index along an axis."""
    data, idx = ins
    axis = int(attr(node, "axis", 0)) % data.ndim
    size = data.shape[axis]
    return [np.take_along_axis(data, np.where(idx < 0, idx + size, idx).astype(np.int64),
                               axis=axis)]


@op("ScatterElements", since=11, attrs=["axis", "reduction"], inputs=(3, 3))
def scatter_elements(node, ins, n):
    """A copy of data with elements replaced at the given indices."""
    data, idx, upd = ins
    if attr(node, "reduction", "none") not in ("none", None):
        from ..errors import UnsupportedOp
        raise UnsupportedOp(f"{node.describe()}: reduction={attr(node, 'reduction')}",
                            node.op_type, node.domain, node.since_version, node.name)
    axis = int(attr(node, "axis", 0)) % data.ndim
    out = np.array(data)
    size = data.shape[axis]
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise InvalidInput(f"{node.describe()}: index out of range")
    np.put_along_axis(out, np.where(idx < 0, idx + size, idx).astype(np.int64), upd, axis=axis)
    return [out]


@op("Transpose", since=1, attrs=["perm"], zero_preserving=True)
def transpose(node, ins, n):
    """Permute axes (reversed when perm is absent)."""
    perm = attr(node, "perm")
    return [np.transpose(ins[0], None if perm is None else [int(p) for p in perm])]


def reshape_target(node, x, shape):
    """The output shape of Reshape(x, shape) as ONNX defines it (0 copies, -1 infers)."""
    shape = [int(d) for d in shape]
    if not attr(node, "allowzero", 0):
        shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
    return shape


@op("Reshape", since=5, attrs=["allowzero"], inputs=(2, 2), shape_params=(1,),
    zero_preserving=True)
def reshape(node, ins, n):
    """Same elements, new shape (a view when possible)."""
    x = ins[0]
    shape = reshape_target(node, x, ins[1].reshape(-1).tolist())
    try:
        return [x.reshape(shape)]
    except ValueError:
        raise InvalidInput(f"{node.describe()}: cannot reshape {x.shape} to {shape}") from None


@op("Flatten", since=1, attrs=["axis"], zero_preserving=True)
def flatten(node, ins, n):
    """To 2-D: the axes before ``axis`` times the rest."""
    x = ins[0]
    axis = int(attr(node, "axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def _squeeze(node, x, axes):
    if axes is None:
        return [np.squeeze(x)]
    axes = norm_axes(axes, x.ndim, node)
    for a in axes:
        if x.shape[a] != 1:
            raise InvalidInput(f"{node.describe()}: cannot squeeze axis {a} of size "
                               f"{x.shape[a]}")
    return [np.squeeze(x, axis=tuple(axes))]


@op("Squeeze", since=1, attrs=["axes"], zero_preserving=True)
def squeeze_1(node, ins, n):
    """Drop axes of size 1 (axes as an attribute)."""
    return _squeeze(node, ins[0], axes_attr(node))


@op("Squeeze", since=13, inputs=(1, 2), shape_params=(1,))
def squeeze_13(node, ins, n):
    """Drop axes of size 1 (axes as an input)."""
    return _squeeze(node, ins[0], axes_input(ins, 1))


def _unsqueeze(node, x, axes):
    if axes is None:
        raise InvalidInput(f"{node.describe()}: axes are required")
    rank = x.ndim + len(axes)
    axes = sorted(norm_axes(axes, rank, node))
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [x.reshape(shape)]


@op("Unsqueeze", since=1, attrs=["axes"], zero_preserving=True)
def unsqueeze_1(node, ins, n):
    """Insert axes of size 1 (axes as an attribute)."""
    return _unsqueeze(node, ins[0], axes_attr(node))


@op("Unsqueeze", since=13, inputs=(2, 2), shape_params=(1,))
def unsqueeze_13(node, ins, n):
    """Insert axes of size 1 (axes as an input)."""
    return _unsqueeze(node, ins[0], axes_input(ins, 1))


@op("Concat", since=4, attrs=["axis"], inputs=(1, 1 << 20))
def concat(node, ins, n):
    """Join tensors along an axis."""
    return [np.concatenate(ins, axis=int(attr(node, "axis", 0)))]


def _slice(node, x, starts, ends, axes, steps):
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    axes = norm_axes(axes, x.ndim, node)
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


@op("Slice", since=1, attrs=["starts", "ends", "axes"], zero_preserving=True)
def slice_1(node, ins, n):
    """A strided window (bounds as attributes)."""
    return _slice(node, ins[0], attr(node, "starts"), attr(node, "ends"), attr(node, "axes"),
                  None)


@op("Slice", since=10, inputs=(3, 5), shape_params=(1, 2, 3, 4))
def slice_10(node, ins, n):
    """A strided window (bounds as inputs)."""
    axes = ins[3].reshape(-1) if len(ins) > 3 and ins[3] is not None else None
    steps = ins[4].reshape(-1) if len(ins) > 4 and ins[4] is not None else None
    return _slice(node, ins[0], ins[1].reshape(-1), ins[2].reshape(-1), axes, steps)


def _split(node, x, sizes, n):
    axis = int(attr(node, "axis", 0)) % x.ndim
    if sizes is None:
        parts = n if attr(node, "num_outputs") is None else int(attr(node, "num_outputs"))
        dim = x.shape[axis]
        step = -(-dim // parts)
        sizes = [min(step, dim - k * step) for k in range(parts)]
    if sum(sizes) != x.shape[axis] or any(s < 0 for s in sizes):
        raise InvalidInput(f"{node.describe()}: split sizes {sizes} do not add up to "
                           f"{x.shape[axis]}")
    return np.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis)


@op("Split", since=2, attrs=["axis", "split"], outputs=(1, 1 << 20), zero_preserving=True)
def split_2(node, ins, n):
    """Cut along an axis (sizes as an attribute)."""
    s = attr(node, "split")
    return _split(node, ins[0], None if s is None else [int(v) for v in s], n)


@op("Split", since=13, attrs=["axis", "num_outputs"], inputs=(1, 2), outputs=(1, 1 << 20),
    shape_params=(1,))
def split_13(node, ins, n):
    """Cut along an axis (sizes as an input, or num_outputs from opset 18)."""
    return _split(node, ins[0], axes_input(ins, 1), n)


@op("Shape", since=1, attrs=["start", "end"])
def shape(node, ins, n):
    """The input's shape as int64 (a window of it from opset 15)."""
    s = np.array(ins[0].shape, np.int64)
    start, end = attr(node, "start", 0), attr(node, "end")
    return [s[start:end]]


@op("Size", since=1)
def size(node, ins, n):
    """The input's element count as int64."""
    return [np.array(ins[0].size, np.int64)]


@op("ConstantOfShape", since=9, attrs=["value"], shape_params=(0,))
def constant_of_shape(node, ins, n):
    """A tensor of the given shape filled with one value (float32 0 by default)."""
    v = attr(node, "value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    dims = [int(d) for d in np.asarray(ins[0]).reshape(-1)]
    if any(d < 0 for d in dims):
        raise InvalidInput(f"{node.describe()}: negative dimension in {dims}")
    return [np.full(dims, v[0], v.dtype)]


@op("Expand", since=8, inputs=(2, 2), shape_params=(1,), zero_preserving=True)
def expand(node, ins, n):
    """Broadcast to a shape (numpy rules)."""
    x, shp = ins
    try:
        target = np.broadcast_shapes(x.shape, tuple(int(d) for d in shp.reshape(-1)))
    except ValueError:
        raise InvalidInput(f"{node.describe()}: cannot expand {x.shape} to "
                           f"{shp.tolist()}") from None
    return [np.array(np.broadcast_to(x, target))]


@op("Range", since=11, inputs=(3, 3), shape_params=(0, 1, 2))
def range_(node, ins, n):
    """start, start + delta, ... below limit."""
    start, limit, delta = (np.asarray(v).reshape(()) for v in ins)
    if delta == 0:
        raise InvalidInput(f"{node.describe()}: delta is 0")
    return [np.arange(start, limit, delta, dtype=start.dtype)]
