"""Normalisation ops: BatchNormalization (inference), InstanceNormalization,
LayerNormalization.

Statistics are computed in float64 and the result is cast back to the input's
type: onnxruntime accumulates float32 sums in float32 (with Eigen's pairwise
reductions), so a float64 reference stays well inside 1e-5 of it while being
independent of summation order.
"""
import numpy as np

from ..errors import InvalidInput, UnsupportedOp
from ..ir import ELEM_TYPES
from .table import attr, op


def _refuse(node, what):
    raise UnsupportedOp(f"{node.describe()}: {what}", node.op_type, node.domain,
                        node.since_version, node.name)


def _per_channel(node, x, v, label, spatial=True):
    """A per-channel parameter as an array that broadcasts against ``x``
    (channels on axis 1; per activation, X.shape[1:], when ``spatial`` is 0)."""
    v = np.asarray(v)
    if x.ndim < 2:
        raise InvalidInput(f"{node.describe()}: input X of rank {x.ndim} has no channel "
                           f"axis")
    if spatial:
        if v.size != x.shape[1]:
            raise InvalidInput(f"{node.describe()}: {label} has {v.size} values for "
                               f"{x.shape[1]} channels")
        return v.reshape((x.shape[1],) + (1,) * (x.ndim - 2))
    try:
        return np.broadcast_to(v, x.shape[1:])
    except ValueError:
        raise InvalidInput(f"{node.describe()}: {label} of shape {v.shape} does not match "
                           f"X's {x.shape[1:]}") from None


# ---- BatchNormalization

def _build_bn(node, ctx):
    """Import-time checks: inference only, one output."""
    if int(attr(node, "training_mode", 0)):
        _refuse(node, "training_mode=1 (fastlstm runs inference; use the running mean "
                      "and variance)")
    if int(attr(node, "is_test", 1)) == 0:
        _refuse(node, "is_test=0 (training)")
    extra = [o for o in node.outputs[1:] if o]
    if extra:
        _refuse(node, f"outputs {extra}: running and saved statistics exist only in "
                      f"training mode")
    return node


def _bn_affine(node, x, params, spatial):
    """(a, c) in X's type with y = x * a + c: scale / sqrt(var + epsilon) and
    B - mean * a, per channel, computed in float64."""
    if x.dtype.kind != "f":
        raise InvalidInput(f"{node.describe()}: X is {x.dtype}; a float tensor is needed")
    eps = float(attr(node, "epsilon", 1e-5))
    s, bias, m, v = (_per_channel(node, x, p, label, spatial).astype(np.float64)
                     for p, label in zip(params, ("scale", "B", "mean", "var")))
    a = s / np.sqrt(v + eps)
    return a.astype(x.dtype), (bias - m * a).astype(x.dtype)


def _spatial(node):
    return bool(int(attr(node, "spatial", 1)))


def _batch_norm(node, ins):
    x = ins[0]
    a, c = _bn_affine(node, x, ins[1:5], _spatial(node))
    # one multiply-add per element, as onnxruntime
    return [(x * a + c).astype(x.dtype, copy=False)]


def _bind_bn(node, consts, rec):
    """With constant parameters (the usual case), a and c are computed once."""
    names = node.inputs[1:5]
    x = rec.get(node.inputs[0])
    if x is None or not all(n in consts for n in names):
        return None
    a, c = _bn_affine(node, x, [consts[n] for n in names], _spatial(node))
    dtype = x.dtype
    return lambda x, *params: (x * a + c).astype(dtype, copy=False)


@op("BatchNormalization", since=7, attrs=["epsilon", "momentum", "spatial"], inputs=(5, 5),
    outputs=(1, 5), bind=_bind_bn)
def batch_norm_7(node, ins, n):
    """Inference batch normalisation (``spatial``=0: statistics per activation)."""
    return _batch_norm(node, ins)


@op("BatchNormalization", since=9, attrs=["epsilon", "momentum"], inputs=(5, 5),
    outputs=(1, 5), bind=_bind_bn)
def batch_norm_9(node, ins, n):
    """Inference batch normalisation over axis 1."""
    return _batch_norm(node, ins)


@op("BatchNormalization", since=14, attrs=["epsilon", "momentum", "training_mode"],
    inputs=(5, 5), outputs=(1, 3), bind=_bind_bn)
def batch_norm_14(node, ins, n):
    """Inference batch normalisation (training_mode=1 refused; from 15 the parameters
    may have another float type than X)."""
    return _batch_norm(node, ins)


batch_norm_7.build = batch_norm_9.build = batch_norm_14.build = _build_bn


# ---- InstanceNormalization

@op("InstanceNormalization", since=6, attrs=["epsilon"], inputs=(3, 3))
def instance_norm(node, ins, n):
    """Normalise each (batch, channel) over the remaining axes, then scale and shift."""
    x, scale, b = ins
    if x.dtype.kind != "f":
        raise InvalidInput(f"{node.describe()}: X is {x.dtype}; a float tensor is needed")
    if x.ndim < 3:
        raise InvalidInput(f"{node.describe()}: X must have rank 3 or more, has {x.ndim}")
    eps = float(attr(node, "epsilon", 1e-5))
    s = _per_channel(node, x, scale, "scale").astype(np.float64)
    bias = _per_channel(node, x, b, "B").astype(np.float64)
    axes = tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = np.square(x64 - mean).mean(axis=axes, keepdims=True)
    return [((x64 - mean) / np.sqrt(var + eps) * s + bias).astype(x.dtype)]


# ---- LayerNormalization

def _build_ln(node, ctx):
    st = int(attr(node, "stash_type", 1))
    if st not in ELEM_TYPES or np.dtype(ELEM_TYPES[st][0]).kind != "f":
        _refuse(node, f"stash_type {st} (a float element type is needed)")
    return node


@op("LayerNormalization", since=17, attrs=["axis", "epsilon", "stash_type"], inputs=(2, 3),
    outputs=(1, 3))
def layer_norm(node, ins, n):
    """Normalise over the axes from ``axis`` on, then scale and shift; optional
    outputs Mean and InvStdDev (in the stash type, reduced axes kept as 1)."""
    x, scale = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if x.dtype.kind != "f":
        raise InvalidInput(f"{node.describe()}: X is {x.dtype}; a float tensor is needed")
    axis = int(attr(node, "axis", -1))
    if not -x.ndim <= axis < x.ndim:
        raise InvalidInput(f"{node.describe()}: axis {axis} is out of range for rank "
                           f"{x.ndim}")
    axis %= x.ndim
    eps = float(attr(node, "epsilon", 1e-5))
    stash = np.dtype(ELEM_TYPES[int(attr(node, "stash_type", 1))][0])
    axes = tuple(range(axis, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = np.square(x64 - mean).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    try:
        y = (x64 - mean) * inv * np.asarray(scale, np.float64)
        if b is not None:
            y = y + np.asarray(b, np.float64)
    except ValueError:
        shown = "" if b is None else f" or B {np.shape(b)}"
        raise InvalidInput(f"{node.describe()}: Scale {np.shape(scale)}{shown} does not "
                           f"broadcast to the normalised shape {x.shape[axis:]}") from None
    if y.shape != x.shape:
        raise InvalidInput(f"{node.describe()}: Scale or B broadcasts X {x.shape} to "
                           f"{y.shape}")
    out = [y.astype(x.dtype)]
    if n > 1:
        out.append(mean.astype(stash))
    if n > 2:
        out.append(inv.astype(stash))
    return out


layer_norm.build = _build_ln
