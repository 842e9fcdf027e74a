"""Per-element float32 functions for fused elementwise loops.

The executor (``fastlstm.fuse``) writes one loop per chain of elementwise ops
and calls these on float32 scalars; each matches what numpy computes for the
op on a float32 array (NaN in gives NaN out, as numpy, except where ONNX says
otherwise) and keeps float32 (constants are float32: a Python float literal
would promote the expression to float64).
"""
import math

import numpy as np
from numba import njit

from .. import config
from .activations import fexp, fsigmoid, ftanh

_F0 = np.float32(0.0)

_opts = config.jit_options(inline="always")


@njit(**_opts)
def relu(x):
    # numpy's maximum keeps NaN
    return x if (x > _F0 or x != x) else _F0


# tanh, sigmoid and exp are the recurrent kernels' float32 arithmetic forms
# (``kernels.activations``: errors measured there, <= 3.4e-7): a libm call per
# element would keep the loop scalar.
sigmoid, tanh, exp = fsigmoid, ftanh, fexp


@njit(**_opts)
def sqrt(x):
    return np.float32(math.sqrt(x)) if x >= _F0 else np.float32(np.nan)


@njit(**_opts)
def log(x):
    if x > _F0:
        return np.float32(math.log(x))
    if x == _F0:
        return np.float32(-np.inf)
    return np.float32(np.nan)


@njit(**_opts)
def erf(x):
    return np.float32(math.erf(x))


@njit(**_opts)
def fmin(a, b):
    # numpy's minimum: NaN if either is NaN
    if a != a or b != b:
        return np.float32(np.nan)
    return a if a <= b else b


@njit(**_opts)
def fmax(a, b):
    if a != a or b != b:
        return np.float32(np.nan)
    return a if a >= b else b


@njit(**_opts)
def power(a, b):
    return np.float32(math.pow(a, b))


@njit(**_opts)
def square(a):
    return a * a


@njit(**_opts)
def clip(x, lo, hi):
    # as the op: x < lo ? lo : x, then > hi ? hi : x (NaN x stays NaN; a NaN
    # bound leaves x as it is)
    y = lo if x < lo else x
    return hi if y > hi else y
