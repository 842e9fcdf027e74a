"""Dense layers of model heads: ``y = x @ W + b`` with W a constant, packed once.

The product runs on the recurrent layers' panel GEMM (``gemm.gemm_bias``):
W is padded to a multiple of 16 columns and packed in panels at load, and a
call is one compiled function.  numpy's ``dot`` (OpenBLAS here) costs more
at the sizes of exported heads: measured with ``OPENBLAS_NUM_THREADS=1``,
interleaved medians, on this AVX2 host: [1, 256] @ [256, 128] 6.5 vs 8.6 us,
[1, 128] @ [128, 95] 4.9 vs 8.8 us, [250, 256] @ [256, 29] 61 vs 91 us,
[100, 256] @ [256, 96] 82 vs 89 us (bias included in both).

Each output element is one chain of FMAs in k order, as in the recurrent
layers, so results do not depend on the number of rows.
"""
import numpy as np
from numba import njit, types

from .. import config
from .gemm import gemm_bias

_F2 = types.float32[:, ::1]
_F1 = types.float32[::1]


@njit(types.void(_F2, _F1, _F1, _F2), **config.jit_options())
def dense_rows(x, wp, bias, out):
    """out[M, Np] = x[M, K] @ W + bias, W packed by ``Dense`` (Np columns)."""
    M, K = x.shape
    Np = out.shape[1]
    gemm_bias(M, K, Np, 0, Np, x.ctypes, wp.ctypes, bias.ctypes, out.ctypes)


class Dense:
    """``w`` [K, N] float32 (and optional bias [N]) packed for ``dense_rows``.

    Calling it on x [..., K] (float32) returns a new C-contiguous [..., N].
    """

    def __init__(self, w, bias=None):
        from ..pack import to_panels
        K, N = w.shape
        self.k, self.n = K, N
        self.np_ = -(-N // 16) * 16
        wpad = np.zeros((K, self.np_), np.float32)
        wpad[:, :N] = w
        self.wp = to_panels(wpad)
        self.bias = np.zeros(self.np_, np.float32)
        if bias is not None:
            self.bias[:N] = bias

    def __call__(self, x):
        shape = x.shape[:-1] + (self.n,)
        x2 = x.reshape(-1, self.k)
        if not x2.flags.c_contiguous:
            x2 = np.ascontiguousarray(x2)
        out = np.empty((x2.shape[0], self.np_), np.float32)
        dense_rows(x2, self.wp, self.bias, out)
        if self.np_ != self.n:      # padded columns: a C-contiguous copy without them
            out = np.ascontiguousarray(out[:, :self.n])
        return out.reshape(shape)
