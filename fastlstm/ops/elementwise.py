"""Elementwise ops: arithmetic, comparisons, activations, unary math, casts.

Float ops that declare ``scalar=`` can be fused by the executor into one loop
per chain (``fastlstm.fuse``); the numpy function beside each is the op itself
(used for constant folding, for other dtypes and when a chain is not fused).
In ``scalar`` templates ``{0}``, ``{1}`` are the inputs, ``{alpha}`` etc. the
node's float attributes (defaults in ``scalar_attrs``), and the names are the
float32 functions of ``fastlstm.kernels.scalar``.
"""
import numpy as np

from .. import limits
from ..errors import InvalidInput, UnsupportedOp
from ..ir import ELEM_TYPES
from .table import attr, inline, op


def _c(value, x):
    """A constant in ``x``'s dtype (a Python float would promote float32)."""
    return np.asarray(value, x.dtype)


# ---- binary arithmetic and comparisons (numpy broadcasting = ONNX multidirectional)

def _div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)
    return np.divide(a, b)


def _binary(name, fn, scalar=None):
    def run(node, ins, n):
        limits.check_broadcast(ins, node)       # ([N, 1] + [1, N] is N*N)
        return [fn(ins[0], ins[1])]
    run.__doc__ = f"{name} of two tensors with numpy broadcasting."
    run.__module__ = __name__
    # versions 1-6 had explicit 'broadcast'/'axis'; opset >= 7 broadcasts implicitly
    op(name, since=7, inputs=(2, 2), scalar=scalar)(run)


_binary("Add", np.add, "({0} + {1})")
_binary("Sub", np.subtract, "({0} - {1})")
_binary("Mul", np.multiply, "({0} * {1})")
_binary("Div", _div, "({0} / {1})")
_binary("Equal", np.equal)
_binary("Less", np.less)
_binary("Greater", np.greater)
_binary("LessOrEqual", np.less_equal)
_binary("GreaterOrEqual", np.greater_equal)
_binary("And", np.logical_and)
_binary("Or", np.logical_or)


@op("Pow", since=7, inputs=(2, 2), scalar="power({0}, {1})")
def pow_(node, ins, n):
    """Pow: base ** exponent, in the base's type."""
    a, b = ins
    if a.dtype.kind in "iu":    # as onnxruntime: pow in double, truncated back (2 ** -1 = 0)
        return [np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)]
    if a.dtype.kind == "f" and b.dtype != a.dtype:
        b = b.astype(a.dtype)
    return [np.power(a, b).astype(a.dtype, copy=False)]


def _variadic(name, fn, scalar):
    def run(node, ins, n):
        limits.check_broadcast(ins, node)
        out = ins[0]
        for x in ins[1:]:
            out = fn(out, x)
        if name == "Mean":
            out = out / _c(len(ins), out)
        return [out if len(ins) > 1 else np.array(out)]
    run.__doc__ = f"{name} of one or more tensors with numpy broadcasting."
    run.__module__ = __name__
    # (version 6, opset 7, had no broadcasting: same results on its equal shapes)
    op(name, since=6, inputs=(1, 1 << 16), scalar=scalar)(run)


_variadic("Sum", np.add, None)
_variadic("Mean", np.add, None)
_variadic("Min", np.minimum, None)
_variadic("Max", np.maximum, None)


# ---- unary


def _unary(name, fn, scalar, attrs=(), scalar_attrs=(), since=6):
    def run(node, ins, n):
        return [fn(node, ins[0])]
    run.__doc__ = f"{name}, elementwise."
    run.__module__ = __name__
    op(name, since=since, attrs=attrs, scalar=scalar, scalar_attrs=scalar_attrs)(run)


def _sigmoid(nd, x):
    """Sigmoid with the fused loops' own float32 arithmetic
    (``kernels.activations.fsigmoid``, the recurrent kernels' sigmoid), so
    that a graph gives the same bits whether the executor fuses the op into
    a loop or runs it alone (before its run is specialised, say: numpy's
    tanh rounds differently, and a Silero session's first calls moved its
    probability by an ulp against its later ones); numpy for other dtypes.
    (A Tanh alone stays numpy's: a specialised run computes it so too.)"""
    if x.dtype != np.float32:
        return _c(0.5, x) * (np.tanh(_c(0.5, x) * x) + _c(1, x))
    from ..kernels.activations import sigmoid_into
    src = np.ascontiguousarray(x)
    out = np.empty(src.shape, np.float32)
    sigmoid_into(src.reshape(-1), out.reshape(-1))
    return out


_unary("Relu", lambda nd, x: np.maximum(x, _c(0, x)), "relu({0})")
_unary("Tanh", lambda nd, x: np.tanh(x), "tanh({0})")
_unary("Sigmoid", _sigmoid, "sigmoid({0})")
_unary("Sqrt", lambda nd, x: np.sqrt(x), "sqrt({0})")
_unary("Exp", lambda nd, x: np.exp(x), "exp({0})")
_unary("Log", lambda nd, x: np.log(x), "log({0})")
_unary("Abs", lambda nd, x: np.abs(x), "abs({0})")
_unary("Neg", lambda nd, x: np.negative(x), "(-{0})")
_unary("Reciprocal", lambda nd, x: np.reciprocal(x), "(np.float32(1) / {0})")
_unary("Erf", lambda nd, x: _erf(x), "erf({0})", since=9)
_unary("LeakyRelu",
       lambda nd, x: np.where(x < 0, x * _c(attr(nd, "alpha", 0.01), x), x),
       "({0} * {alpha} if {0} < 0 else {0})", attrs=["alpha"],
       scalar_attrs=(("alpha", 0.01),))
_unary("Elu",
       lambda nd, x: np.where(x < 0, _c(attr(nd, "alpha", 1.0), x) * (np.exp(x) - _c(1, x)),
                              x),
       "({alpha} * (exp({0}) - np.float32(1)) if {0} < 0 else {0})", attrs=["alpha"],
       scalar_attrs=(("alpha", 1.0),))
_unary("HardSigmoid",
       lambda nd, x: np.clip(x * _c(attr(nd, "alpha", 0.2), x) + _c(attr(nd, "beta", 0.5), x),
                             _c(0, x), _c(1, x)),
       "fmax(np.float32(0), fmin(np.float32(1), {0} * {alpha} + {beta}))",
       attrs=["alpha", "beta"], scalar_attrs=(("alpha", 0.2), ("beta", 0.5)))
_unary("HardSwish",
       lambda nd, x: x * np.clip(x * _c(1 / 6, x) + _c(0.5, x), _c(0, x), _c(1, x)),
       "({0} * fmax(np.float32(0), fmin(np.float32(1), {0} * np.float32(1 / 6) "
       "+ np.float32(0.5))))", since=14)
_unary("Softplus",
       lambda nd, x: np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))),
                              np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False),
       None, since=1)


def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[x.dtype])(x) if x.size else x.copy()


_F32_MAX = 3.4028234663852886e38


def _clip_scalar(node, args):
    """Clip's per-element expression over its present inputs (``args``): the
    bounds are attributes before opset 11, optional inputs from it on (an
    absent one is the float32 extreme, as in the numpy form)."""
    lo, hi = f"np.float32({-_F32_MAX!r})", f"np.float32({_F32_MAX!r})"
    if node.since_version < 11:
        lo = f"np.float32({float(attr(node, 'min', -_F32_MAX))!r})"
        hi = f"np.float32({float(attr(node, 'max', _F32_MAX))!r})"
        return f"clip({args[0]}, {lo}, {hi})"
    k = 1
    if node.input(1):
        lo, k = args[k], k + 1
    if node.input(2):
        hi = args[k]
    return f"clip({args[0]}, {lo}, {hi})"


@op("Clip", since=6, attrs=["min", "max"], scalar=_clip_scalar)
def clip_6(node, ins, n):
    """Clip with min/max as attributes (opset 6-10)."""
    x = ins[0]
    lo, hi = attr(node, "min", -_F32_MAX), attr(node, "max", _F32_MAX)
    return [np.minimum(np.maximum(x, _c(lo, x)), _c(hi, x))]


@op("Clip", since=11, inputs=(1, 3), scalar=_clip_scalar)
def clip_11(node, ins, n):
    """Clip with optional min/max inputs (opset 11 on)."""
    x = ins[0]
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    if x.dtype.kind == "f":     # an absent bound is the finite extreme (inf -> max), as onnxruntime
        lo = np.finfo(x.dtype).min if lo is None else lo
        hi = np.finfo(x.dtype).max if hi is None else hi
    out = x
    # x < lo ? lo : x (std::max): a NaN bound leaves x as it is, as in onnxruntime
    if lo is not None:
        lo = np.asarray(lo).astype(x.dtype).reshape(())
        out = np.where(out < lo, lo, out)
    if hi is not None:
        hi = np.asarray(hi).astype(x.dtype).reshape(())
        out = np.where(out > hi, hi, out)
    return [out if out is not x else x.copy()]


@op("Not", since=1)
def not_(node, ins, n):
    """Logical not."""
    return [np.logical_not(ins[0])]


@op("Where", since=9, inputs=(3, 3))
def where(node, ins, n):
    """Select from two tensors by a condition, with broadcasting."""
    limits.check_broadcast(ins, node)
    return [np.where(ins[0], ins[1], ins[2])]


def _bind_cast(node, consts, rec):
    to = ELEM_TYPES.get(int(attr(node, "to")), (None,))[0]
    if to is None:
        return None
    x = rec.get(node.inputs[0])
    if isinstance(x, np.ndarray) and x.dtype == to:
        # a cast to its own type: no copy, but C order as the op's result
        # (the recorded run, which later steps are compiled for, had one)
        return inline(lambda x: np.ascontiguousarray(x), "np.ascontiguousarray({0})")
    return inline(lambda x: x.astype(to), "{0}.astype({to})", to=to)


def _cast_scalar(node, args):
    # float32 to float32 (the executor fuses float32 ops only): the value itself
    return args[0] if int(attr(node, "to")) == 1 else None


@op("Cast", since=6, attrs=["to", "saturate", "round_mode"], zero_preserving=True,
    bind=_bind_cast, scalar=_cast_scalar)
def cast(node, ins, n):
    """Convert to another element type."""
    to = int(attr(node, "to"))
    if to not in ELEM_TYPES:
        raise UnsupportedOp(f"{node.describe()}: cast to element type {to}", node.op_type,
                            node.domain, node.since_version, node.name)
    return [ins[0].astype(ELEM_TYPES[to][0])]


@op("Identity", since=1, zero_preserving=True)
def identity(node, ins, n):
    """The input, unchanged."""
    return [ins[0]]


@op("Dropout", since=7, attrs=["ratio", "is_test", "seed"], inputs=(1, 3), outputs=(1, 2))
def dropout(node, ins, n):
    """Inference: the input unchanged (and an all-true mask)."""
    if len(ins) > 2 and ins[2] is not None and bool(np.asarray(ins[2])):
        raise UnsupportedOp(f"{node.describe()}: training_mode=True (fastlstm runs inference)",
                            node.op_type, node.domain, node.since_version, node.name)
    out = [ins[0]]
    if n > 1:
        out.append(np.ones(ins[0].shape, np.bool_))
    return out


__all__ = ["InvalidInput"]
