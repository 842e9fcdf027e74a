"""Row-blocked products against packed, pre-transposed weights.

Weights are packed as ``Wt[K, N]`` (see ``fastlstm.pack``): row k holds the
weights of input k for every output column, with the columns in tile order (the
G gates of each tile of TILE hidden units side by side).  ``gemm_acc`` walks K
eight rows at a time and, for each row of ``a``, streams the eight weight rows
through one long vectorizable loop over the columns:

    out[m, n] += sum_j a[m, k+j] * Wt[k+j, n]        j = 0..7

The long inner loop is what makes LLVM's vector code pay off: the accumulators
live in ``out`` (L1), each weight element is loaded once per row of ``a`` and
per eight multiply-adds one ``out`` vector is loaded and stored.  Columns are
processed in chunks of ``NCHUNK`` so that, with several rows, the weight rows of
a chunk stay in L1 while every row of ``a`` uses them.
"""
from numba import njit, types

from .. import config

F32P = types.CPointer(types.float32)

_jit = dict(nogil=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
            error_model=config.NUMBA_ERROR_MODEL)

#: Columns per chunk: 8 weight rows x 512 floats = 16 KiB, half of L1.
NCHUNK = 512
#: Rows of ``a`` per block, so that a block's outputs stay in L2 across all of K.
MBLOCK = 32


@njit(types.void(types.int64, types.int64, types.int64, F32P, types.int64, types.int64,
                 F32P, types.int64, types.int64, F32P, types.int64, types.int64),
      inline="always", **_jit)
def _gemm_block(M, K, N, a, aoff, lda, w, woff, ldw, out, ooff, ldo):
    for n0 in range(0, N, NCHUNK):
        nn = min(NCHUNK, N - n0)
        k = 0
        while k + 8 <= K:
            w0 = woff + k * ldw + n0
            for m in range(M):
                ar = aoff + m * lda + k
                a0 = a[ar]
                a1 = a[ar + 1]
                a2 = a[ar + 2]
                a3 = a[ar + 3]
                a4 = a[ar + 4]
                a5 = a[ar + 5]
                a6 = a[ar + 6]
                a7 = a[ar + 7]
                o = ooff + m * ldo + n0
                for n in range(nn):
                    wn = w0 + n
                    out[o + n] += ((a0 * w[wn] + a1 * w[wn + ldw]) +
                                   (a2 * w[wn + 2 * ldw] + a3 * w[wn + 3 * ldw])) + \
                                  ((a4 * w[wn + 4 * ldw] + a5 * w[wn + 5 * ldw]) +
                                   (a6 * w[wn + 6 * ldw] + a7 * w[wn + 7 * ldw]))
            k += 8
        while k < K:
            w0 = woff + k * ldw + n0
            for m in range(M):
                av = a[aoff + m * lda + k]
                o = ooff + m * ldo + n0
                for n in range(nn):
                    out[o + n] += av * w[w0 + n]
            k += 1


@njit(types.void(types.int64, types.int64, types.int64, F32P, types.int64, types.int64,
                 F32P, types.int64, types.int64, F32P, types.int64, types.int64),
      inline="always", **_jit)
def gemm_acc(M, K, N, a, aoff, lda, w, woff, ldw, out, ooff, ldo):
    """out[ooff + m*ldo + n] += sum_k a[aoff + m*lda + k] * w[woff + k*ldw + n], m < M, n < N.

    N may be a slice of w's columns (ldw its row length): a thread working on a
    range of tiles multiplies only its columns.
    """
    for m0 in range(0, M, MBLOCK):
        _gemm_block(min(MBLOCK, M - m0), K, N, a, aoff + m0 * lda, lda, w, woff, ldw, out,
                    ooff + m0 * ldo, ldo)


@njit(types.void(types.int64, types.int64, types.int64, F32P, F32P, F32P, F32P), **_jit)
def gemm_bias(M, K, N, x, w, bias, out):
    """Input projection of all time steps at once: out[M, N] = x[M, K] @ w[K, N] + bias[N]."""
    for m in range(M):
        o = m * N
        for n in range(N):
            out[o + n] = bias[n]
    gemm_acc(M, K, N, x, 0, K, w, 0, N, out, 0, N)
