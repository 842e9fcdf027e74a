"""Row-blocked products against packed, pre-transposed weights.

Weights are packed as ``Wt[K, N]`` (see ``fastlstm.pack``): row k holds the
weights of input k for every output column, with the columns in tile order (the
G gates of each tile of TILE hidden units side by side).  ``gemm_acc`` walks K
a few rows at a time and streams those weight rows through one long
vectorizable loop over the columns:

    out[m, n] += sum_j a[m, k+j] * Wt[k+j, n]

The long inner loop is what makes LLVM's vector code pay off (a short one pays
a runtime alias check per entry): the accumulators live in ``out`` (L1), and
register blocking comes from unrolling K (several weight rows per pass) and M
(two rows of ``a`` share every weight load).  Columns are processed in chunks
of ``NCHUNK`` so that the weight rows of a chunk stay in L1 while every row of
``a`` uses them.  Measured single-thread on the development machine (AMD EPYC
Zen 4): 60-90 GFLOP/s for 100x256 @ 256x1024, about what OpenBLAS reaches on
one thread.
"""
from numba import njit, types

from .. import config

F32P = types.CPointer(types.float32)

_jit = dict(nogil=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
            error_model=config.NUMBA_ERROR_MODEL)

#: Columns per chunk: 4 weight rows x 2048 floats = 32 KiB, the size of L1.
NCHUNK = 2048
#: Rows of ``a`` per block, so that a block's outputs stay in L2 across all of K.
MBLOCK = 32


@njit(types.void(types.int64, types.int64, types.int64, F32P, types.int64, types.int64,
                 F32P, types.int64, F32P, types.int64), **_jit)
def _gemm_full(M, K, N, a, aoff, lda, w, woff, out, ooff):
    """out[ooff + m*N + n] += sum_k a[aoff + m*lda + k] * w[woff + k*N + n]: all N columns.

    Rows in pairs and K four at a time, so each weight vector loaded feeds eight
    FMAs.  Both ``out`` rows and ``w`` rows are N apart and every column run is
    at most N long, which lets LLVM vectorize with one alias check per loop.
    """
    for n0 in range(0, N, NCHUNK):
        nn = min(NCHUNK, N - n0)
        for k in range(0, K - 3, 4):
            wb = woff + k * N + n0
            m = 0
            while m + 2 <= M:
                ar = aoff + m * lda + k
                br = ar + lda
                a0 = a[ar]
                a1 = a[ar + 1]
                a2 = a[ar + 2]
                a3 = a[ar + 3]
                b0 = a[br]
                b1 = a[br + 1]
                b2 = a[br + 2]
                b3 = a[br + 3]
                ob = ooff + m * N + n0
                for n in range(nn):
                    x0 = w[wb + n]
                    x1 = w[wb + N + n]
                    x2 = w[wb + 2 * N + n]
                    x3 = w[wb + 3 * N + n]
                    out[ob + n] += (a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3)
                    out[ob + N + n] += (b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3)
                m += 2
            if m < M:
                ar = aoff + m * lda + k
                a0 = a[ar]
                a1 = a[ar + 1]
                a2 = a[ar + 2]
                a3 = a[ar + 3]
                ob = ooff + m * N + n0
                for n in range(nn):
                    out[ob + n] += (a0 * w[wb + n] + a1 * w[wb + N + n]) + \
                                   (a2 * w[wb + 2 * N + n] + a3 * w[wb + 3 * N + n])
        for k in range(K - K % 4, K):
            wb = woff + k * N + n0
            for m in range(M):
                av = a[aoff + m * lda + k]
                ob = ooff + m * N + n0
                for n in range(nn):
                    out[ob + n] += av * w[wb + n]


@njit(types.void(types.int64, types.int64, F32P, types.int64, F32P, types.int64,
                 types.int64, F32P, types.int64), **_jit)
def _gemv(K, N, a, aoff, w, woff, ldw, out, ooff):
    """out[ooff + n] += sum_k a[aoff + k] * w[woff + k*ldw + n] for n < N: one row.

    K four at a time, summed in exactly the order ``_gemm_full`` uses, so a row
    gets the same bits whichever path computes it (results must not depend on
    the batch a row is in or on the thread count).  Used for the batch-1
    recurrent product, where N may be a thread's slice of the columns (ldw the
    full row length).
    """
    for n0 in range(0, N, NCHUNK):
        nn = min(NCHUNK, N - n0)
        o = ooff + n0
        for k in range(0, K - 3, 4):
            w0 = woff + k * ldw + n0
            ar = aoff + k
            a0 = a[ar]
            a1 = a[ar + 1]
            a2 = a[ar + 2]
            a3 = a[ar + 3]
            for n in range(nn):
                wn = w0 + n
                out[o + n] += (a0 * w[wn] + a1 * w[wn + ldw]) + \
                              (a2 * w[wn + 2 * ldw] + a3 * w[wn + 3 * ldw])
        for k in range(K - K % 4, K):
            av = a[aoff + k]
            w0 = woff + k * ldw + n0
            for n in range(nn):
                out[o + n] += av * w[w0 + n]


@njit(types.void(types.int64, types.int64, types.int64, F32P, types.int64, types.int64,
                 F32P, types.int64, types.int64, F32P, types.int64), **_jit)
def gemm_acc(M, K, N, a, aoff, lda, w, woff, ld, out, ooff):
    """out[ooff + m*ld + n] += sum_k a[aoff + m*lda + k] * w[woff + k*ld + n], m < M, n < N.

    ``w`` and ``out`` share the row length ``ld``; N may be a slice of it (a
    thread computing a range of tiles).  A slice is only ever asked for one row
    at a time (the front end splits tiles only at batch 1); several rows always
    cover whole rows.
    """
    if M == 1 or N != ld:
        for m in range(M):
            _gemv(K, N, a, aoff + m * lda, w, woff, ld, out, ooff + m * ld)
        return
    for m0 in range(0, M, MBLOCK):
        _gemm_full(min(MBLOCK, M - m0), K, N, a, aoff + m0 * lda, lda, w, woff, out,
                   ooff + m0 * N)


@njit(types.void(types.int64, types.int64, types.int64, F32P, F32P, F32P, F32P), **_jit)
def gemm_bias(M, K, N, x, w, bias, out):
    """Input projection of all time steps at once: out[M, N] = x[M, K] @ w[K, N] + bias[N]."""
    for m in range(M):
        o = m * N
        for n in range(N):
            out[o + n] = bias[n]
    gemm_acc(M, K, N, x, 0, K, w, 0, N, out, 0)
