"""Shape and indexing ops: reshape, slice, concatenate, gather, build shapes.

These move and select elements of small tensors (shapes, states, heads), so
numpy is the tool.  Inputs listed in ``shape_params`` set the output's shape by
their values; the executor needs them known to cache or specialise a run.
"""
import numpy as np

from .. import limits
from ..errors import InvalidInput
from .table import attr, inline, op


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


def _take(node, data, idx, axis):
    # The method checks the range itself (and counts negatives from the end,
    # as ONNX); np.take's dispatch cost 2.5 us for one embedding row, the
    # method 0.45 us (a step of a generator looks up one token per run).
    try:
        return (data if isinstance(data, np.ndarray) else np.asarray(data)).take(idx, axis)
    except (IndexError, TypeError):
        size = data.shape[axis] if -data.ndim <= axis < data.ndim else "?"
        raise InvalidInput(f"{node.describe()}: index out of range [-{size}, {size}) "
                           f"or not an integer tensor") from None


def _bind_gather(node, consts, rec):
    """Shapes fixed by the signature (the size check passed when it was
    recorded): the take alone, its range still checked (an embedding lookup
    of a token id, per step of a generator)."""
    data, idx = rec.get(node.inputs[0]), rec.get(node.inputs[1])
    if not isinstance(data, np.ndarray) or not isinstance(idx, np.ndarray):
        return None
    axis = int(attr(node, "axis", 0))
    return lambda d, i: _take(node, d, i, axis)


@op("Gather", since=1, attrs=["axis"], inputs=(2, 2), zero_preserving=True, moves=True,
    bind=_bind_gather)
def gather(node, ins, n):
    """Take slices along an axis by index (negative indices count from the end)."""
    data, idx = ins
    axis = int(attr(node, "axis", 0))
    if data.size * np.size(idx) * data.dtype.itemsize > limits.current_limit() and \
            -data.ndim <= axis < data.ndim:
        a = axis % data.ndim
        limits.check_shape(data.shape[:a] + np.shape(idx) + data.shape[a + 1:], data.dtype,
                           node)
    return [_take(node, data, idx, axis)]


@op("GatherElements", since=11, attrs=["axis"], inputs=(2, 2), moves=True)
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


def _bind_transpose(node, consts, rec):
    perm = attr(node, "perm")
    perm = None if perm is None else tuple(int(p) for p in perm)
    return inline(lambda x: x.transpose(perm), "{0}.transpose({perm})", perm=perm)


@op("Transpose", since=1, attrs=["perm"], zero_preserving=True, bind=_bind_transpose)
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


def _bind_concat(node, consts, rec):
    axis = int(attr(node, "axis", 0))
    args = ", ".join(f"{{{k}}}" for k in range(len(node.inputs)))
    return inline(lambda *xs: np.concatenate(xs, axis=axis),
                  f"np.concatenate(({args},), axis={{axis}})", axis=axis)


@op("Concat", since=4, attrs=["axis"], inputs=(1, 1 << 20), bind=_bind_concat)
def concat(node, ins, n):
    """Join tensors along an axis."""
    limits.check_bytes(sum(x.nbytes for x in ins if x is not None), "the output", node)
    return [np.concatenate(ins, axis=int(attr(node, "axis", 0)))]


def _slice_index(node, shape, starts, ends, axes, steps):
    """The numpy index (a tuple of slices) of an ONNX Slice of a tensor of ``shape``."""
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    axes = norm_axes(axes, rank, node)
    index = [slice(None)] * rank
    for k, a in enumerate(axes):
        step = 1 if steps is None else int(steps[k])
        if step == 0:
            raise InvalidInput(f"{node.describe()}: slice step 0")
        s, e = int(starts[k]), int(ends[k])
        dim = shape[a]
        # clamp as ONNX does (numpy's own clamping differs for huge negatives)
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if step > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, -1), dim - 1), min(max(e, -1), dim - 1)
        index[a] = slice(s, None if (step < 0 and e < 0) else e, step)
    return tuple(index)


def _slice(node, x, starts, ends, axes, steps):
    return [x[_slice_index(node, x.shape, starts, ends, axes, steps)]]


def _slice_args(node, ins):
    if node.since_version < 10:
        return attr(node, "starts"), attr(node, "ends"), attr(node, "axes"), None
    axes = ins[3].reshape(-1) if len(ins) > 3 and ins[3] is not None else None
    steps = ins[4].reshape(-1) if len(ins) > 4 and ins[4] is not None else None
    return ins[1].reshape(-1), ins[2].reshape(-1), axes, steps


def _bind_slice(node, consts, rec):
    """For a fixed input shape and constant bounds: a view with a precomputed index."""
    ins = [rec.get(i) if i else None for i in node.inputs]
    if any(i and i not in consts for i in node.inputs[1:]):
        return None
    index = _slice_index(node, rec[node.inputs[0]].shape, *_slice_args(node, ins))
    return inline(lambda x, *rest: x[index], "{0}[{index}]", index=index)


@op("Slice", since=1, attrs=["starts", "ends", "axes"], zero_preserving=True,
    bind=_bind_slice)
def slice_1(node, ins, n):
    """A strided window (bounds as attributes)."""
    return _slice(node, ins[0], *_slice_args(node, ins))


@op("Slice", since=10, inputs=(3, 5), shape_params=(1, 2, 3, 4))
def slice_10(node, ins, n):
    """A strided window (bounds as inputs)."""
    return _slice(node, ins[0], *_slice_args(node, ins))


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


def _bind_split(node, consts, rec):
    """Fixed shapes and sizes: each output a view by a precomputed index."""
    x = rec[node.inputs[0]]
    outs = [rec.get(o) for o in node.outputs]
    if any(o is None for o in outs) or any(i and i not in consts for i in node.inputs[1:]):
        return None
    axis = int(attr(node, "axis", 0)) % x.ndim
    index, start = [], 0
    for o in outs:
        stop = start + o.shape[axis]
        index.append((slice(None),) * axis + (slice(start, stop),))
        start = stop
    index = tuple(index)
    return lambda v, *rest: tuple([v[ix] for ix in index])


@op("Split", since=2, attrs=["axis", "split"], outputs=(1, 1 << 20), zero_preserving=True,
    bind=_bind_split)
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
    limits.check_shape(dims, v.dtype, node)
    return [np.full(dims, v[0], v.dtype)]


@op("Expand", since=8, inputs=(2, 2), shape_params=(1,), zero_preserving=True, moves=True)
def expand(node, ins, n):
    """Broadcast to a shape (numpy rules)."""
    x, shp = ins
    try:
        target = np.broadcast_shapes(x.shape, tuple(int(d) for d in shp.reshape(-1)))
    except ValueError:
        raise InvalidInput(f"{node.describe()}: cannot expand {x.shape} to "
                           f"{shp.tolist()}") from None
    limits.check_shape(target, x.dtype, node)
    return [np.array(np.broadcast_to(x, target))]


@op("Range", since=11, inputs=(3, 3), shape_params=(0, 1, 2))
def range_(node, ins, n):
    """start, start + delta, ... below limit."""
    start, limit, delta = (np.asarray(v).reshape(()) for v in ins)
    if delta == 0:
        raise InvalidInput(f"{node.describe()}: delta is 0")
    if start.dtype.kind in "iu":
        count = -(-(int(limit) - int(start)) // int(delta))
    else:
        count = (float(limit) - float(start)) / float(delta)
        count = np.ceil(count) if np.isfinite(count) else float("inf")
    limits.check_shape((max(count, 0) if count != float("inf") else 1 << 62,), start.dtype,
                       node)
    return [np.arange(start, limit, delta, dtype=start.dtype)]


# ---- Pad, Tile, Resize

def _refuse(node, what):
    from ..errors import UnsupportedOp
    raise UnsupportedOp(f"{node.describe()}: {what}", node.op_type, node.domain,
                        node.since_version, node.name)


def _bad_model(node, what):
    from ..errors import InvalidModel
    raise InvalidModel(f"{node.describe()}: {what}")


_PAD_MODES = ("constant", "reflect", "edge", "wrap")

def _allocate(node, shape, dtype, make):
    """``make()``, or an error naming the node when an output of ``shape`` is over
    the size limit (``fastlstm.limits``: InvalidModel while a model loads,
    InvalidInput in a run) or cannot be allocated."""
    limits.check_shape(shape, dtype, node)
    try:
        return make()
    except MemoryError:
        raise limits.error_class()(f"{node.describe()}: cannot allocate an output of "
                                   f"shape {tuple(shape)}") from None


def _check_pad(node, ctx):
    """Import-time validation (the table's ``build`` hook)."""
    mode = attr(node, "mode", "constant")
    if mode not in _PAD_MODES:     # ('wrap' is new in Pad 19; onnxruntime runs it earlier too)
        _bad_model(node, f"mode '{mode}' is not a Pad mode")
    return node


def _pad(node, x, pads, value, axes, mode):
    rank = x.ndim
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(rank)) if axes is None else norm_axes(axes, rank, node)
    if len(set(axes)) != len(axes):
        raise InvalidInput(f"{node.describe()}: repeated axes {axes}")
    if len(pads) != 2 * len(axes):
        raise InvalidInput(f"{node.describe()}: {len(pads)} pads for {len(axes)} axes "
                           f"(need 2 per axis)")
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    # negative pads crop first; the remaining (positive) pads see the cropped tensor
    crop = []
    for a in range(rank):
        lo, hi = max(-begin[a], 0), max(-end[a], 0)
        if lo + hi > x.shape[a]:
            raise InvalidInput(f"{node.describe()}: pads crop {lo + hi} from axis {a} "
                               f"of size {x.shape[a]}")
        crop.append(slice(lo, x.shape[a] - hi))
    x = x[tuple(crop)]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    shape = [d + b + e for d, (b, e) in zip(x.shape, widths)]
    if mode == "constant":
        v = np.asarray(0 if value is None else value).reshape(-1)
        v = np.asarray(v[0] if v.size else 0, x.dtype)
        return [_allocate(node, shape, x.dtype,
                          lambda: np.pad(x, widths, mode="constant", constant_values=v))]
    for a, (b, e) in enumerate(widths):
        if not (b or e):
            continue
        if x.shape[a] == 0:
            raise InvalidInput(f"{node.describe()}: cannot pad axis {a} of size 0 in "
                               f"'{mode}' mode")
        if mode == "reflect" and max(b, e) > x.shape[a] - 1:
            raise InvalidInput(f"{node.describe()}: reflect pads ({b}, {e}) exceed "
                               f"{x.shape[a] - 1} on axis {a} of size {x.shape[a]}")
    return [_allocate(node, shape, x.dtype, lambda: np.pad(x, widths, mode=mode))]


def _bind_pad(node, consts, rec):
    """Constant pads for one input shape: the center copied in, then each
    padded axis's borders filled from the output itself (reflected, edge or
    wrapped slices; the value in constant mode), axis by axis as np.pad
    does.  A few slice copies: a gather by a precomputed index map read 8
    bytes of index per element (Silero's sequence variant pads [293, 576]
    to [293, 832])."""
    x = rec.get(node.inputs[0])
    y = rec.get(node.outputs[0])
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        return None
    if any(i and i not in consts for i in node.inputs[1:]):
        return None
    mode = attr(node, "mode", "constant")
    ins = [x] + [consts[i] if i else None for i in node.inputs[1:]]
    if node.since_version < 11:
        pads, value, axes = attr(node, "pads"), attr(node, "value", 0.0), None
    else:
        pads = ins[1]
        value = ins[2] if len(ins) > 2 else None
        axes = axes_input(ins, 3)
    rank = x.ndim
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(rank)) if axes is None else norm_axes(axes, rank, node)
    if min(pads, default=0) < 0 or len(pads) != 2 * len(axes):
        return None         # (cropping: the general path)
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    v = np.asarray(0 if value is None else value).reshape(-1)
    v = np.asarray(v[0] if v.size else 0, x.dtype)
    center = tuple(slice(b, b + n) for b, n in zip(begin, x.shape))
    fills = []
    for a in range(rank):
        b, e, n = begin[a], end[a], x.shape[a]
        if not (b or e):
            continue
        if mode == "wrap" and max(b, e) > n:
            return None
        region = [slice(None)] * a + [None] + list(center[a + 1:])

        def at(s):
            return tuple(region[:a] + [s] + region[a + 1:])
        for lo, hi, side in ((0, b, "begin"), (b + n, b + n + e, "end")):
            if lo == hi:
                continue
            if mode == "constant":
                src = None
            elif mode == "edge":
                src = slice(b, b + 1) if side == "begin" else slice(b + n - 1, b + n)
            elif mode == "reflect":
                if side == "begin":
                    src = slice(2 * b, b, -1)
                else:
                    stop = b + n - 2 - e
                    src = slice(b + n - 2, stop if stop >= 0 else None, -1)
            elif mode == "wrap":
                src = slice(n, n + b) if side == "begin" else slice(b, b + e)
            else:
                return None
            fills.append((at(slice(lo, hi)), None if src is None else at(src)))
    shape, dtype = y.shape, x.dtype

    def run(x, *rest):
        out = np.empty(shape, dtype)
        out[center] = x
        for dst, src in fills:
            out[dst] = v if src is None else out[src]
        return out
    return run


@op("Pad", since=2, attrs=["pads", "value", "mode"], bind=_bind_pad)
def pad_2(node, ins, n):
    """Pad with constant, reflected or edge values (pads as an attribute)."""
    return _pad(node, ins[0], attr(node, "pads"), attr(node, "value", 0.0), None,
                attr(node, "mode", "constant"))


@op("Pad", since=11, attrs=["mode"], inputs=(2, 3), shape_params=(1,))
def pad_11(node, ins, n):
    """Pad with constant, reflected or edge values (pads and value as inputs)."""
    value = ins[2] if len(ins) > 2 else None
    return _pad(node, ins[0], ins[1], value, None, attr(node, "mode", "constant"))


@op("Pad", since=18, attrs=["mode"], inputs=(2, 4), shape_params=(1, 3))
def pad_18(node, ins, n):
    """Pad along some axes (an optional axes input; mode 'wrap' from opset 19)."""
    value = ins[2] if len(ins) > 2 else None
    return _pad(node, ins[0], ins[1], value, axes_input(ins, 3),
                attr(node, "mode", "constant"))


pad_2.build = pad_11.build = pad_18.build = _check_pad


@op("Tile", since=6, inputs=(2, 2), shape_params=(1,), zero_preserving=True, moves=True)
def tile(node, ins, n):
    """Repeat the input along each axis (repeats as an input)."""
    x, reps = ins
    reps = [int(r) for r in np.asarray(reps).reshape(-1)]
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise InvalidInput(f"{node.describe()}: repeats {reps} do not fit rank {x.ndim} "
                           f"(one non-negative count per axis)")
    return [_allocate(node, [d * r for d, r in zip(x.shape, reps)], x.dtype,
                      lambda: np.tile(x, reps))]


_TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _check_resize(node, ctx):
    """Import-time validation (the table's ``build`` hook)."""
    mode = attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        _bad_model(node, f"mode '{mode}' is not a Resize mode")
    if node.since_version >= 11:
        ct = attr(node, "coordinate_transformation_mode", "half_pixel")
        # (half_pixel_symmetric is new in Resize 19; onnxruntime runs it from 11, as we do)
        if ct not in _TRANSFORMS:
            _bad_model(node, f"coordinate_transformation_mode '{ct}' is not defined")
        nm = attr(node, "nearest_mode", "round_prefer_floor")
        if nm not in _NEAREST_MODES:
            _bad_model(node, f"nearest_mode '{nm}' is not defined")
        if len(node.inputs) < 3 or not any(node.inputs[2:4]):
            _bad_model(node, "needs either scales or sizes")
    if int(attr(node, "antialias", 0)):
        _refuse(node, "antialias=1 is not supported")
    pol = attr(node, "keep_aspect_ratio_policy", "stretch")
    if pol not in ("stretch", "not_larger", "not_smaller"):
        _bad_model(node, f"keep_aspect_ratio_policy '{pol}' is not defined")
    if int(attr(node, "exclude_outside", 0)) and mode != "cubic":
        _refuse(node, "exclude_outside=1 outside cubic mode (it only changes antialiased "
                      "filters, which are not supported)")
    return node


_F = np.float32


def _original_coords(ct, out_len, in_len, scale, roi_lo, roi_hi):
    """Input coordinates (float32) of the output positions of one axis, computed
    in float32 operation by operation as onnxruntime does (nearest picks depend on
    the exact rounding)."""
    x = np.arange(out_len, dtype=_F)
    s, lo, li = _F(scale), _F(out_len), _F(in_len)
    half = _F(0.5)
    if ct == "half_pixel":
        return (x + half) / s - half
    if ct == "half_pixel_symmetric":
        adjustment = lo / (s * li)
        offset = (li / _F(2)) * (_F(1) - adjustment)
        # (onnxruntime adds the half pixels in double here)
        return (np.float64(offset) + (x.astype(np.float64) + 0.5) / np.float64(s)
                - 0.5).astype(_F)
    if ct == "pytorch_half_pixel":
        return (x + half) / s - half if out_len > 1 else np.zeros(out_len, _F)
    if ct == "align_corners":
        if out_len == 1:
            return np.zeros(1, _F)
        return x * (li - _F(1)) / (lo - _F(1))
    if ct == "asymmetric":
        return x / s
    if ct == "tf_half_pixel_for_nn":
        return (x + half) / s
    # tf_crop_and_resize
    r0, r1 = _F(roi_lo), _F(roi_hi)
    if out_len > 1:
        return r0 * (li - _F(1)) + x * (r1 - r0) * (li - _F(1)) / (lo - _F(1))
    return np.full(out_len, _F(0.5) * (r0 + r1) * (li - _F(1)), _F)


def _nearest_index(nm, orig, downsample):
    o = orig.astype(np.float64)
    if nm == "simple":             # Resize 10: floor up, ceil down
        idx = np.ceil(o) if downsample else np.trunc(o)
    elif nm == "round_prefer_floor":
        idx = np.ceil(o - 0.5)
    elif nm == "round_prefer_ceil":
        idx = np.floor(o + 0.5)
    elif nm == "floor":
        idx = np.floor(o)
    else:
        idx = np.ceil(o)
    return idx


def _resize(node, x, roi, scales, sizes, axes):
    mode, ct, nm, scale, out_shape, roi, extrap = _resize_setup(node, x, roi, scales, sizes,
                                                                axes)
    if tuple(out_shape) == x.shape:    # onnxruntime copies whatever the scales say
        return [x.copy()]
    return _allocate(node, out_shape, x.dtype,
                     lambda: _resample(node, x, mode, ct, nm, scale, out_shape, roi, extrap))


def _resize_setup(node, x, roi, scales, sizes, axes):
    """Validated parameters: mode, coordinate transform, nearest mode, the scale and
    output size of every axis, the full roi and the extrapolation value."""
    rank = x.ndim
    v10 = node.since_version < 11
    mode = attr(node, "mode", "nearest")
    ct = "asymmetric" if v10 else attr(node, "coordinate_transformation_mode", "half_pixel")
    nm = "simple" if v10 else attr(node, "nearest_mode", "round_prefer_floor")
    axes = list(range(rank)) if axes is None else norm_axes(axes, rank, node)
    if len(set(axes)) != len(axes):
        raise InvalidInput(f"{node.describe()}: repeated axes {axes}")
    if scales is not None and np.asarray(scales).size == 0:
        scales = None
    if sizes is not None and np.asarray(sizes).size == 0:
        sizes = None
    if (scales is None) == (sizes is None):
        raise InvalidInput(f"{node.describe()}: exactly one of scales and sizes must be "
                           f"given (non-empty)")
    n = len(axes)
    scale = [_F(1)] * rank
    out_shape = list(x.shape)
    if scales is not None:
        sc = np.asarray(scales, _F).reshape(-1)
        if sc.size != n or not np.all((sc > 0) & np.isfinite(sc)):
            raise InvalidInput(f"{node.describe()}: scales {sc.tolist()} (need {n} finite "
                               f"positive values)")
        for k, a in enumerate(axes):
            scale[a] = sc[k]
    else:
        sz = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(sz) != n or any(v < 0 for v in sz):
            raise InvalidInput(f"{node.describe()}: sizes {sz} (need {n} non-negative "
                               f"values)")
        pol = attr(node, "keep_aspect_ratio_policy", "stretch")
        if pol == "stretch":
            for k, a in enumerate(axes):
                out_shape[a] = sz[k]
                scale[a] = _F(sz[k]) / _F(x.shape[a]) if x.shape[a] else _F(1)
        else:
            ratios = [_F(sz[k]) / _F(x.shape[a]) if x.shape[a] else _F(1)
                      for k, a in enumerate(axes)]
            common = min(ratios) if pol == "not_larger" else max(ratios)
            for a in axes:
                scale[a] = common
                out_shape[a] = int(np.floor(np.float64(common * _F(x.shape[a])) + 0.5))
    if roi is not None and np.asarray(roi).size:
        roi = np.asarray(roi, _F).reshape(-1)
        if roi.size != 2 * n:
            raise InvalidInput(f"{node.describe()}: roi has {roi.size} values for {n} axes")
        full = np.concatenate([np.zeros(rank, _F), np.ones(rank, _F)])
        for k, a in enumerate(axes):
            full[a], full[a + rank] = roi[k], roi[k + n]
        roi = full
    else:
        roi = np.concatenate([np.zeros(rank, _F), np.ones(rank, _F)])
    if scales is not None:
        # floor(size * scale) in float32; with tf_crop_and_resize the spec also
        # multiplies by the roi's extent, onnxruntime does not: we follow onnxruntime
        for a in range(rank):
            size = _F(x.shape[a]) * scale[a]
            if not size < 2 ** 62:
                raise InvalidInput(f"{node.describe()}: scale {scale[a]} on axis {a} of "
                                   f"size {x.shape[a]} gives an output too large")
            out_shape[a] = int(size)
    if x.size == 0 and any(d for d in out_shape):
        if any(x.shape[a] == 0 and out_shape[a] for a in range(rank)):
            raise InvalidInput(f"{node.describe()}: cannot resize an empty axis")
    extrap = _F(attr(node, "extrapolation_value", 0.0))
    return mode, ct, nm, scale, out_shape, roi, extrap


def _resample(node, x, mode, ct, nm, scale, out_shape, roi, extrap):
    if mode == "linear" and x.dtype.kind in "iub":
        return _linear_int(node, x, ct, scale, out_shape, roi, extrap)
    steps, outside = _resample_steps(node, x.shape, x.dtype, mode, ct, nm, scale, out_shape,
                                     roi)
    return [_apply_steps(x, steps, outside, extrap)]


def _resample_steps(node, shape, dtype, mode, ct, nm, scale, out_shape, roi):
    """Per resized axis, its taps: [(axis, [(indices, weights or None), ...])], and the
    mask of output positions outside the input (tf_crop_and_resize) or None."""
    if mode == "cubic" and np.dtype(dtype).kind != "f":
        _refuse(node, f"cubic resize of a {np.dtype(dtype)} tensor (floats only)")
    rank = len(shape)
    steps, outside = [], None
    for a in range(rank):
        if scale[a] == 1 and out_shape[a] == shape[a]:
            continue
        L, R = shape[a], out_shape[a]
        orig = _original_coords(ct, R, L, scale[a], roi[a], roi[a + rank])
        shp = [1] * rank
        shp[a] = R
        if ct == "tf_crop_and_resize":
            mask = (orig < 0) | (orig > _F(L - 1))
            if mask.any():
                m = mask.reshape(shp)
                outside = m if outside is None else (outside | m)
        if mode == "nearest":
            idx = _nearest_index(nm, orig, scale[a] < 1)
            steps.append((a, [(np.clip(idx, 0, L - 1).astype(np.intp), None)]))
        elif mode == "linear":
            i1, i2, w1, w2 = _linear_weights(orig, L)
            steps.append((a, [(i1, w1.astype(dtype).reshape(shp)),
                              (i2, w2.astype(dtype).reshape(shp))]))
        else:
            idx, w = _cubic_taps(orig, L, float(attr(node, "cubic_coeff_a", -0.75)),
                                 bool(int(attr(node, "exclude_outside", 0))))
            steps.append((a, [(idx[:, k], w[:, k].astype(dtype).reshape(shp))
                              for k in range(4)]))
    return steps, outside


def _apply_steps(x, steps, outside, extrap):
    y = x
    for a, taps in steps:
        acc = None
        for idx, w in taps:
            t = np.take(y, idx, axis=a)
            if w is not None:
                t = t * w
            acc = t if acc is None else acc + t
        y = acc
    if outside is not None:
        y = np.where(outside, np.asarray(extrap, y.dtype), y)
    return np.ascontiguousarray(y, dtype=x.dtype) if y is not x else x.copy()


def _cubic_taps(orig, L, A, exclude_outside):
    """Cubic convolution taps of one axis: (R, 4) indices floor(x)-1 .. floor(x)+2
    clamped into the input, and their weights (Keys' kernel with coefficient A;
    with exclude_outside, taps outside the input get 0 and the rest are rescaled)."""
    o = orig.astype(np.float64)
    f = np.floor(o)
    r = o - f
    s = 1.0 - r
    w = np.stack([((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A,
                  ((A + 2) * r - (A + 3)) * r * r + 1,
                  ((A + 2) * s - (A + 3)) * s * s + 1,
                  ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A], axis=1)
    idx = f.astype(np.intp)[:, None] + np.arange(-1, 3)
    if exclude_outside:
        w = np.where((idx < 0) | (idx > L - 1), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        # (all four outside happens only where tf_crop_and_resize extrapolates anyway)
        w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    return np.clip(idx, 0, L - 1), w.astype(_F)


def _linear_weights(orig, L):
    """Linear taps of one axis: indices i1, i2 and their weights, as onnxruntime
    (coordinates clamped into the input; one tap at the edge, weighted 0.5 twice)."""
    c = np.clip(orig, _F(0), _F(L - 1))
    i1 = np.minimum(c.astype(np.intp), L - 1)
    i2 = np.minimum(i1 + 1, L - 1)
    d1 = np.abs(c - i1.astype(_F))
    d2 = np.abs(c - i2.astype(_F))
    same = i1 == i2
    d1[same] = _F(0.5)
    d2[same] = _F(0.5)
    return i1, i2, d2, d1


def _linear_int(node, x, ct, scale, out_shape, roi, extrap):
    """Linear resize of an integer tensor: onnxruntime's four-term bilinear sum in
    float32, in its order, truncated (a separable sum rounds differently, and an
    integer result is truncated right where that shows)."""
    rank = x.ndim
    if not (rank == 2 or (rank == 4 and scale[0] == 1 and scale[1] == 1)):
        _refuse(node, f"linear resize of a {x.dtype} tensor other than 2-D or NCHW "
                      f"(onnxruntime uses fixed-point weights for the others)")
    taps, masks = [], []
    for a in (rank - 2, rank - 1):
        L, R = x.shape[a], out_shape[a]
        if scale[a] == 1:
            orig = np.arange(R, dtype=_F)
            masks.append(np.zeros(R, bool))
        else:
            orig = _original_coords(ct, R, L, scale[a], roi[a], roi[a + rank])
            masks.append(((orig < 0) | (orig > _F(L - 1))) if ct == "tf_crop_and_resize"
                         else np.zeros(R, bool))
        taps.append(_linear_weights(orig, L))
    (y1, y2, dy2, dy1), (x1, x2, dx2, dx1) = taps
    xf = x.astype(_F)

    def at(i, j):
        return xf[..., i[:, None], j[None, :]]
    out = ((dx2[None, :] * dy2[:, None]) * at(y1, x1) + (dx1[None, :] * dy2[:, None]) * at(y1, x2)
           + (dx2[None, :] * dy1[:, None]) * at(y2, x1)
           + (dx1[None, :] * dy1[:, None]) * at(y2, x2))
    out = np.where(masks[0][:, None] | masks[1][None, :], extrap, out)
    info = np.iinfo(x.dtype)
    return [np.clip(np.trunc(out), info.min, info.max).astype(x.dtype)]


def _resize_args(node, ins):
    """(roi, scales, sizes, axes) of a Resize node's form."""
    get = (lambda k: ins[k] if len(ins) > k else None)
    if node.since_version < 11:
        return None, get(1), None, None
    return get(1), get(2), get(3), axes_attr(node) if node.since_version >= 18 else None


def _bind_resize(node, consts, rec):
    """With constant scales/sizes/roi: the taps and weights of each axis computed
    once for the recorded input shape."""
    x = rec.get(node.inputs[0])
    if x is None or any(i and i not in consts for i in node.inputs[1:]):
        return None
    ins = [x] + [consts[i] if i else None for i in node.inputs[1:]]
    mode, ct, nm, scale, out_shape, roi, extrap = _resize_setup(node, x,
                                                                *_resize_args(node, ins))
    if tuple(out_shape) == x.shape:
        return lambda x, *params: x.copy()
    if mode == "linear" and x.dtype.kind in "iub":
        return None
    total = int(np.prod(out_shape, dtype=np.float64)) * x.dtype.itemsize
    if total > limits.current_limit():      # (the general path names the error)
        return None
    steps, outside = _resample_steps(node, x.shape, x.dtype, mode, ct, nm, scale, out_shape,
                                     roi)
    return lambda x, *params: _apply_steps(x, steps, outside, extrap)


@op("Resize", since=10, attrs=["mode"], inputs=(2, 2), shape_params=(1,), bind=_bind_resize)
def resize_10(node, ins, n):
    """Resize by scales (nearest, linear or cubic; asymmetric coordinates)."""
    return _resize(node, ins[0], *_resize_args(node, ins))


@op("Resize", since=11, attrs=["mode", "coordinate_transformation_mode", "nearest_mode",
                               "cubic_coeff_a", "exclude_outside", "extrapolation_value"],
    inputs=(1, 4), shape_params=(2, 3))
def resize_11(node, ins, n):
    """Resize by scales or sizes (nearest, linear, cubic; every coordinate transform)."""
    return _resize(node, ins[0], *_resize_args(node, ins))


@op("Resize", since=18, attrs=["mode", "coordinate_transformation_mode", "nearest_mode",
                               "cubic_coeff_a", "exclude_outside", "extrapolation_value",
                               "antialias", "axes", "keep_aspect_ratio_policy"],
    inputs=(1, 4), shape_params=(2, 3))
def resize_18(node, ins, n):
    """Resize some axes (axes attribute, keep_aspect_ratio_policy; no antialiasing)."""
    return _resize(node, ins[0], *_resize_args(node, ins))


resize_10.build = resize_11.build = resize_18.build = _check_resize
