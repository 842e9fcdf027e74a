"""Blocked products against packed weight panels.

Packed weight panels (see ``fastlstm.pack``) hold, for each tile of ``TILE``
hidden units, a ``K x GT`` row-major block (``GT = G*TILE``) in which the G gates
of those units sit side by side.  A product row ``x[k] * panel[k, :]`` therefore
updates every gate of a tile with contiguous, vectorizable loads, and the
accumulators of one tile stay in L1 while its panel streams through once.
"""
from numba import njit, types

from .. import config

F32P = types.CPointer(types.float32)
I64P = types.CPointer(types.int64)

_jit = dict(nogil=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
            error_model=config.NUMBA_ERROR_MODEL)

#: Rows of x handled together: each panel row is loaded once per block.
ROW_BLOCK = 4


@njit(types.void(types.int64, types.int64, types.int64, types.int64, F32P, F32P, F32P,
                 F32P), **_jit)
def gemm_bias(M, K, ntiles, gt, x, wp, bias, out):
    """Input projection of all time steps at once.

    out[m, p*gt + n] = bias[p*gt + n] + sum_k x[m*K + k] * wp[(p*K + k)*gt + n]

    x is ``M x K`` row-major, out is ``M x ntiles*gt`` row-major.
    """
    N = ntiles * gt
    for p in range(ntiles):
        woff = p * K * gt
        boff = p * gt
        for m0 in range(0, M, ROW_BLOCK):
            nrows = min(ROW_BLOCK, M - m0)
            for r in range(nrows):
                o = (m0 + r) * N + boff
                for n in range(gt):
                    out[o + n] = bias[boff + n]
            for k in range(K):
                wrow = woff + k * gt
                for r in range(nrows):
                    xv = x[(m0 + r) * K + k]
                    o = (m0 + r) * N + boff
                    for n in range(gt):
                        out[o + n] += xv * wp[wrow + n]


@njit(types.void(types.int64, F32P, types.int64, types.int64, types.int64, F32P,
                 types.int64, types.int64, F32P, types.int64),
      inline="always", **_jit)
def recurrent_acc(nact, h, hoff, hstride, K, wp, woff, gt, acc, aoff):
    """acc[aoff + b*gt + n] += sum_k h[hoff + b*hstride + k] * wp[woff + k*gt + n], b < nact.

    The per-step recurrent product of one tile for all active batch rows: each
    panel row is read once per k and reused for every row.
    """
    for k in range(K):
        wrow = woff + k * gt
        for b in range(nact):
            hv = h[hoff + b * hstride + k]
            a = aoff + b * gt
            for n in range(gt):
                acc[a + n] += hv * wp[wrow + n]
