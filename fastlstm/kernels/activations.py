"""Float32 activation functions written as arithmetic LLVM can vectorize.

A call to libm's ``expf`` inside a loop stops LLVM from vectorizing it, and
Numba's SVML path does not work in current releases, so ``exp`` is built from
multiply/add, a rounding and an integer-to-float bit cast:

    exp(x) = 2**n * exp(r),  n = round(x / ln 2),  r = x - n ln 2  (|r| <= ln2/2)

with ``ln 2`` split in two parts (Cody-Waite) so ``r`` is exact in float32, and
``exp(r)`` as its degree-7 Taylor polynomial (truncation error < 3e-9 relative on
|r| <= 0.347, below float32 rounding).  ``2**n`` is written straight into the
exponent bits.  The input is clamped to [-87.3, 88.4] so ``n`` stays in the normal
range; NaN passes the clamp untouched and comes out NaN.

``tanh`` is a rational function, x * P(x**2) / Q(x**2) with P of degree 5 and Q
of degree 3 (fitted by ``tools/fit_tanh.py``), on x clamped to [-9, 9]: 13
vector operations and one division, against about 27 for an exp-based tanh that
keeps its relative accuracy near 0 (measured: the LSTM gate math of a 16-unit
tile 41 -> 26 ns with sigmoid built on it).  ``sigmoid(x) = (1 + tanh(x/2)) / 2``.

Measured error over every float32 in [-100, 100] (2.3e9 values) against float64
libm, ``python -m fastlstm.kernels.activations`` (80 s):

    exp      max rel error 7.9e-08 (on [-87, 88], where float32 exp is normal)
    sigmoid  max abs error 1.9e-07
    tanh     max abs error 3.4e-07, max rel error 3.4e-07

Beyond +-100 every function sits on its limit (exp saturates at the clamp).
The test suite re-checks these bounds on a sample.

Activation codes follow the order of the ONNX activation list; ``apply`` runs
one of them over a short contiguous run of a buffer with the branch taken once,
outside the loop, so each branch's loop vectorizes on its own.
"""
import math

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

from .. import config

RELU, TANH, SIGMOID, AFFINE, LEAKY_RELU, THRESHOLDED_RELU, SCALED_TANH, \
    HARD_SIGMOID, ELU, SOFTSIGN, SOFTPLUS = range(11)

#: ONNX name -> (code, default alpha, default beta).  The recurrent ops' text
#: gives no defaults; these are onnxruntime's (measured: tests/test_kernels.py,
#: test_each_activation_against_onnxruntime),
#: which leave Affine, ScaledTanh and ThresholdedRelu at alpha = beta = 0.
ACTIVATIONS = {
    "Relu": (RELU, 0.0, 0.0),
    "Tanh": (TANH, 0.0, 0.0),
    "Sigmoid": (SIGMOID, 0.0, 0.0),
    "Affine": (AFFINE, 0.0, 0.0),
    "LeakyRelu": (LEAKY_RELU, 0.01, 0.0),
    "ThresholdedRelu": (THRESHOLDED_RELU, 0.0, 0.0),
    "ScaledTanh": (SCALED_TANH, 0.0, 0.0),
    "HardSigmoid": (HARD_SIGMOID, 0.2, 0.5),
    "Elu": (ELU, 1.0, 0.0),
    "Softsign": (SOFTSIGN, 0.0, 0.0),
    "Softplus": (SOFTPLUS, 0.0, 0.0),
}

_jit = config.jit_options()


@intrinsic
def _bits_to_f32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = args[0]
        if bits.bitwidth > 32:
            low = builder.trunc(low, llvm_ir.IntType(32))
        return builder.bitcast(low, llvm_ir.FloatType())

    return types.float32(bits), codegen


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)        # few mantissa bits: n * _LN2_HI is exact
_LN2_LO = np.float32(-2.12194440e-4)     # ln 2 - _LN2_HI
_HI = np.float32(88.4)
_LO = np.float32(-87.3)
_C2 = np.float32(1.0 / 2)
_C3 = np.float32(1.0 / 6)
_C4 = np.float32(1.0 / 24)
_C5 = np.float32(1.0 / 120)
_C6 = np.float32(1.0 / 720)
_C7 = np.float32(1.0 / 5040)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
# tanh(x) ~ x * P(x^2) / Q(x^2) on [0, 9]: coefficients from tools/fit_tanh.py
_TMAX = np.float32(9.0)
_P0 = np.float32(0.9999999403953552)
_P1 = np.float32(0.1292392909526825)
_P2 = np.float32(0.0029256693087518215)
_P3 = np.float32(9.308681910624728e-06)
_P4 = np.float32(-1.2889604938948196e-08)
_P5 = np.float32(1.84965254917957e-11)
_Q0 = np.float32(1.0)
_Q1 = np.float32(0.4625721573829651)
_Q2 = np.float32(0.02378367818892002)
_Q3 = np.float32(0.00022875559807289392)


@njit(types.float32(types.float32), **_jit)
def fexp(x):
    """exp(x) in float32 from vectorizable arithmetic (see module docstring)."""
    x = _HI if x > _HI else x
    x = _LO if x < _LO else x
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + _ONE
    p = p * r + _ONE
    scale = _bits_to_f32((np.int32(n) + np.int32(127)) << 23)
    return p * scale


@njit(types.float32(types.float32), **_jit)
def ftanh(x):
    """tanh(x) as x * P(x**2) / Q(x**2) on [-9, 9] (see the module docstring);
    +-1 beyond, where float32 tanh is +-1 too.  Odd and accurate relative to x
    near 0; NaN passes the clamp and comes out NaN."""
    x = _TMAX if x > _TMAX else x
    x = -_TMAX if x < -_TMAX else x
    t = x * x
    num = ((((_P5 * t + _P4) * t + _P3) * t + _P2) * t + _P1) * t + _P0
    den = ((_Q3 * t + _Q2) * t + _Q1) * t + _Q0
    return x * num / den


@njit(types.float32(types.float32), **_jit)
def fsigmoid(x):
    """1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2."""
    return _HALF + _HALF * ftanh(_HALF * x)


@njit(**_jit)
def sigmoid_into(x, y):
    """y[i] = fsigmoid(x[i]): a Sigmoid run alone (``ops.elementwise``), the
    same bits as in a fused loop."""
    for i in range(x.size):
        y[i] = fsigmoid(x[i])


# -- the same functions on LLVM vectors, for kernels written as IR (a loop
# that must run several independent chains at once, which LLVM's
# vectorizer does not arrange by itself: ``winograd._sig_rows8``,
# ``lstm._make_gates``).  Same formulas and constants; multiply-adds as
# FMAs.  ``v`` is a ``kernels.irvec.V``.

def ir_tanh(v, x):
    """``ftanh`` of a vector as IR: x clamped to [-9, 9] (NaN passes),
    x P(x^2) / Q(x^2), the polynomials in Horner form with FMAs."""
    b = v.builder
    x = b.select(b.fcmp_ordered(">", x, v.const(_TMAX)), v.const(_TMAX), x)
    x = b.select(b.fcmp_ordered("<", x, v.const(-_TMAX)), v.const(-_TMAX), x)
    t = b.fmul(x, x)
    num = v.const(_P5)
    for cf in (_P4, _P3, _P2, _P1, _P0):
        num = v.fma(num, t, v.const(cf))
    den = v.const(_Q3)
    for cf in (_Q2, _Q1, _Q0):
        den = v.fma(den, t, v.const(cf))
    return b.fdiv(b.fmul(x, num), den)


def ir_sigmoid(v, x):
    """``fsigmoid`` of a vector as IR: 1/2 + tanh(x/2)/2."""
    th = ir_tanh(v, v.builder.fmul(x, v.const(_HALF)))
    return v.fma(v.const(_HALF), th, v.const(_HALF))


@njit(types.void(types.int64, types.float32, types.float32, types.CPointer(types.float32),
                 types.int64, types.int64), **_jit)
def apply(code, alpha, beta, buf, start, n):
    """Apply activation ``code`` in place to ``buf[start:start+n]``."""
    if code == SIGMOID:
        for j in range(start, start + n):
            buf[j] = fsigmoid(buf[j])
    elif code == TANH:
        for j in range(start, start + n):
            buf[j] = ftanh(buf[j])
    elif code == RELU:
        for j in range(start, start + n):
            v = buf[j]
            buf[j] = v if v > _ZERO else _ZERO
    elif code == AFFINE:
        for j in range(start, start + n):
            buf[j] = alpha * buf[j] + beta
    elif code == LEAKY_RELU:
        for j in range(start, start + n):
            v = buf[j]
            buf[j] = v if v >= _ZERO else alpha * v
    elif code == THRESHOLDED_RELU:
        for j in range(start, start + n):
            v = buf[j]
            buf[j] = v if v > alpha else _ZERO
    elif code == SCALED_TANH:
        for j in range(start, start + n):
            buf[j] = alpha * ftanh(beta * buf[j])
    elif code == HARD_SIGMOID:
        for j in range(start, start + n):
            # NaN -> 0, as onnxruntime computes it
            v = alpha * buf[j] + beta
            r = v if v > _ZERO else _ZERO
            buf[j] = _ONE if v > _ONE else r
    elif code == ELU:
        for j in range(start, start + n):
            v = buf[j]
            buf[j] = v if v >= _ZERO else alpha * (fexp(v) - _ONE)
    elif code == SOFTSIGN:
        for j in range(start, start + n):
            v = buf[j]
            buf[j] = v / (_ONE + abs(v))
    elif code == SOFTPLUS:
        for j in range(start, start + n):
            # log(1 + e^v) = max(v, 0) + log1p(e^-|v|): no overflow for large v.
            v = buf[j]
            m = v if v > _ZERO else _ZERO
            buf[j] = m + np.float32(math.log1p(fexp(-abs(v))))


@njit(types.void(types.CPointer(types.float32), types.int64, types.int64, types.float32),
      **_jit)
def clip(buf, start, n, limit):
    """Clamp ``buf[start:start+n]`` to [-limit, limit]; NaN stays NaN."""
    lo = -limit
    for j in range(start, start + n):
        v = buf[j]
        v = limit if v > limit else v
        buf[j] = lo if v < lo else v


@njit(**_jit)
def _errors(bits_lo, bits_hi, stride, out):
    """Scan float32 bit patterns [bits_lo, bits_hi) with a stride, both signs,
    and keep the max errors in ``out`` (exp rel, sigmoid abs, tanh abs, tanh rel)."""
    for b in range(bits_lo, bits_hi, stride):
        xp = _bits_to_f32(b)
        for x in (xp, -xp):
            x64 = np.float64(x)
            if -87.0 <= x64 <= 88.0:
                ref = math.exp(x64)
                out[0] = max(out[0], abs(np.float64(fexp(x)) - ref) / ref)
            sref = 1.0 / (1.0 + math.exp(-x64)) if x64 > -700 else 0.0
            out[1] = max(out[1], abs(np.float64(fsigmoid(x)) - sref))
            tref = math.tanh(x64)
            err = abs(np.float64(ftanh(x)) - tref)
            out[2] = max(out[2], err)
            if tref != 0.0:
                out[3] = max(out[3], err / abs(tref))
    return out


def measure_errors(limit=100.0, stride=1):
    """Max errors of fexp/fsigmoid/ftanh against float64 libm.

    Scans every ``stride``-th float32 in [-limit, limit] (stride=1: all of them,
    about 2.2e9 values, some tens of seconds).  Returns a dict of floats.
    """
    out = np.zeros(4)
    _errors(0, int(np.float32(limit).view(np.int32)) + 1, stride, out)
    return dict(zip(["exp_rel", "sigmoid_abs", "tanh_abs", "tanh_rel"], out.tolist()))


if __name__ == "__main__":
    import sys
    for k, v in measure_errors(stride=int(sys.argv[1]) if len(sys.argv) > 1 else 1).items():
        print(f"{k:12s} {v:.3g}")
