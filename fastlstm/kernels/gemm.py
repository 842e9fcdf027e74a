"""Products against weights packed in panels, built on the register tiles of ``simd``.

Layout (see ``fastlstm.pack.to_panels``): a weight matrix ``Wt[K, N]`` (N a
multiple of 16, columns in tile order) is stored as consecutive panels of 64
columns, each ``K x 64`` row-major (the last one narrower when 64 does not
divide N).  A panel is read front to back, so the hardware prefetcher streams
it; a tile keeps 4 rows x 64 columns of the output in 16 vector registers for
the whole of K, so every weight vector loaded feeds four FMAs and the output is
loaded and stored once.  Measured single-thread on the development machine (AMD
EPYC, Zen 4, AVX-512): about 105 GFLOP/s for 100x256 @ 256x1024 and 64x256 @
256x1024, and 60-85 GB/s of weights streamed at one row (the batch-1 step).
On an AVX2 host (16 registers of 8 floats) the tiles are smaller: blocks of 6
rows x 16 columns, K in blocks of ``KC`` (see ``panel_gemm`` and ``_rest``);
measured on the AVX2 machine (AMD EPYC znver3, one core, shared): 30-45 GMAC/s
at M = 8-250, and about 90 GB/s of weights streamed from L2 at one row.

Every output element is the same chain of FMAs in k order however the product
is tiled or split between threads, so results are bitwise reproducible.
"""
from numba import njit, types

from .. import config
from .simd import (MAX_ROWS, PANEL, t1_1, t1_2, t1_3, t1_4, t2_1, t2_2, t2_3, t2_4, t3_1,
                   t3_2, t3_3, t3_4, t4_1, t4_2, t4_3, t4_4, t5_1, t6_1)

F32P = types.CPointer(types.float32)

_jit = config.jit_options()

_I = types.int64


def _host_has_avx512():
    try:
        import llvmlite.binding as ll
        return bool(ll.get_host_cpu_features().get("avx512f", False))
    except Exception:       # (features unknown: assume the smaller register file)
        return False


#: A tile keeps mr x (nv * 16) floats of the output in registers.  With
#: AVX-512 (32 registers of 16 floats) the 4 x 64 tile fits; on an AVX2 host a
#: 16-float vector is two of its 16 registers, so the same tile would need 32
#: accumulators and spill on every FMA: there a tile is 6 rows x 16 columns
#: (12 registers, each weight load feeding 6 FMAs; measured here at M =
#: 100-293, K = 128-256, N = 512-1024: 28-30 GMAC/s, against 14-15 for the
#: spilling 4 x 64 tile, 19-22 for 4 x 16, 19 for 3 x 32 and 2 x 32).
#: Each output element is the same chain of FMAs in k order either way, so
#: results do not change.  (Numba's cache is per host CPU, so this constant is
#: never reused on another host.)
#: The rows left after the 6-row blocks (1-5) go through ``_rest``, see there.
AVX512 = _host_has_avx512()
TILE_ROWS = MAX_ROWS if AVX512 else 6
TILE_VECS = 4 if AVX512 else 1
#: Rows of K a tile runs at a time on an AVX2 host (see panel_gemm)
KC = 64
#: ``panel_gemm``'s flag (in ``rev``): out = the product instead of out += it
SET = 2


@njit(types.void(_I, _I, _I, F32P, _I, _I, F32P, _I, _I, F32P, _I, _I, _I), **_jit)
def _tile(mr, nv, K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero):
    """Dispatch to the register tile of mr rows (1-4, or 5-6 with one vector) and
    nv vectors (1-4); ``zero``: out = the product, not out += it."""
    if mr == 6:
        t6_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
    elif mr == 5:
        t5_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
    elif mr == 4:
        if nv == 4:
            t4_4(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 3:
            t4_3(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 2:
            t4_2(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        else:
            t4_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
    elif mr == 3:
        if nv == 4:
            t3_4(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 3:
            t3_3(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 2:
            t3_2(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        else:
            t3_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
    elif mr == 2:
        if nv == 4:
            t2_4(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 3:
            t2_3(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 2:
            t2_2(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        else:
            t2_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
    else:
        if nv == 4:
            t1_4(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 3:
            t1_3(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        elif nv == 2:
            t1_2(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
        else:
            t1_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)


@njit(types.void(_I, _I, _I, F32P, _I, _I, F32P, _I, _I, F32P, _I, _I, _I), **_jit)
def _rest(r, nv, K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero):
    """r = 1-5 rows across nv vectors of a panel (AVX2 hosts), in tiles of at
    least 8 accumulator registers where the rows allow it.

    An FMA has 4 cycles of latency and two issue per cycle, so a tile with
    fewer than 8 independent accumulators (ymm registers) leaves FMA units
    idle: 2 rows x 16 columns (4) ran at half the rate of 6 x 16.  Here 5 rows
    go as 5 x 16 (10), 4 as 4 x 16 (8), 3 as 3 x 32 (12), 2 as 2 x 32 (8) and 1
    as 1 x 64 (8).  Measured on this AVX2 machine (a loop of panel_gemm calls,
    best of 7; before -> after, GMAC/s): K=256 N=1024: M=2 12.8 -> 18.5, M=4
    19.6 -> 25.8, M=5 15.8 -> 28.9, M=8 22.7 -> 30.4, M=11 21.4 -> 34.9;
    K=128 N=512: M=2 13.6 -> 25.0, M=25 25.7 -> 33.1."""
    if r == 5:
        for v in range(nv):
            t5_1(K, a, aoff, lda, w, woff + 16 * v, ldw, out, ooff + 16 * v, ldo, zero)
    elif r == 4:
        for v in range(nv):
            t4_1(K, a, aoff, lda, w, woff + 16 * v, ldw, out, ooff + 16 * v, ldo, zero)
    elif r == 1:
        _tile(1, nv, K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero)
    else:                       # 2 or 3 rows: pairs of vectors, then an odd one
        v = 0
        while v + 2 <= nv:
            _tile(r, 2, K, a, aoff, lda, w, woff + 16 * v, ldw, out, ooff + 16 * v, ldo, zero)
            v += 2
        if v < nv:
            _tile(r, 1, K, a, aoff, lda, w, woff + 16 * v, ldw, out, ooff + 16 * v, ldo, zero)


@njit(types.void(_I, _I, _I, _I, _I, F32P, _I, _I, F32P, _I, F32P, _I, _I, _I), **_jit)
def panel_gemm(M, K, N, c0, c1, a, aoff, lda, wp, woff, out, ooff, ldo, rev):
    """out[ooff + m*ldo + n] += sum_k a[aoff + m*lda + k] * Wt[k, n] for m < M, c0 <= n < c1.

    Wt (K x N) is packed in panels at ``wp[woff:]``; c0 must be a multiple of 64
    and c1 a multiple of 64 or N.  ``rev`` holds flags: bit 0 visits the
    panels last to first (same results: a panel's columns are computed
    whole); bit 1 (``SET``) makes it ``out = ...`` (out is not read: no
    zeroing pass before, no load of zeros into the tiles; the same sums).
    """
    zero = (rev >> 1) & 1
    rev = rev & 1
    first = c0 // PANEL
    last = (c1 + PANEL - 1) // PANEL - 1
    # AVX2 row blocks: ``full`` blocks of 6, then ``tail`` rows in blocks of
    # 5 or 4 where a remainder of 1-3 rows would leave a small tile that
    # streams the panel for few rows: 8 = 4 + 4 rather than 6 + 2, 9 = 5 + 4,
    # 13 = 5 + 4 + 4 (measured, median speed-up over 15 interleaved rounds:
    # M=8 K=256 N=1024 1.19, M=13 K=128 N=512 1.08, M=25 (5 x 5 blocks tried)
    # 1.04; 7 rows stay 6 + 1: 4 + 3 measured 0.73).
    full = M // 6
    tail = M - 6 * full
    if (tail == 2 or tail == 3) and full >= 1:
        full -= 1
        tail += 6
    elif tail == 1 and full >= 2:
        full -= 2
        tail += 12
    # (one block of at most 5 rows: nothing to reuse between K blocks)
    kb = max(K, 1) if M <= 5 else KC
    for q in range(last - first + 1):
        p = last - q if rev != 0 else first + q
        n0 = p * PANEL
        width = min(PANEL, N - n0)
        nv = width // 16
        pw = woff + n0 * K          # panels before p are K x 64 each
        if M == 1:                  # one row: the whole panel (nv <= 4 vectors fit)
            _tile(1, nv, K, a, aoff, lda, wp, pw, width, out, ooff + n0, ldo, zero)
            continue
        if not AVX512:
            # 6-row blocks, then the last M % 6 rows (``_rest``), KC rows of
            # the panel at a time; each block goes across the panel's strips
            # of 16 columns while its KC x 6 inputs are in L1.  Whole-K strips
            # taken down all blocks did not stay in L1: a strip's rows are 256
            # bytes apart, so it maps to a quarter of L1's sets.  Measured
            # (a loop of panel_gemm calls, median over 15 interleaved rounds of
            # the speed-up, two runs): M=64 K=256 N=1024 1.07, 1.07; M=100
            # K=128 N=512 0.97, 1.11; M=100 K=256 N=1024 1.05, 1.09; M=250
            # K=256 N=768 1.12, 1.16; M=8 and M=25 1.0-1.09.  Partial sums go
            # through ``out`` in float32, which the registers hold anyway, so
            # the result keeps its bits.
            for k0 in range(0, max(K, 1), kb):
                kc = min(kb, K - k0)
                wk = pw + k0 * width
                z = zero if k0 == 0 else 0
                for b in range(full):
                    for v in range(nv):
                        t6_1(kc, a, aoff + 6 * b * lda + k0, lda, wp, wk + 16 * v, width, out,
                             ooff + 6 * b * ldo + n0 + 16 * v, ldo, z)
                m = 6 * full
                rem = tail
                while rem > 0:
                    r = 5 if rem == 5 or rem == 9 or rem == 13 else min(4, rem)
                    _rest(r, nv, kc, a, aoff + m * lda + k0, lda, wp, wk, width, out,
                          ooff + m * ldo + n0, ldo, z)
                    m += r
                    rem -= r
            continue
        for v0 in range(0, nv, TILE_VECS):
            vn = min(TILE_VECS, nv - v0)
            m = 0
            while m < M:
                mr = min(TILE_ROWS, M - m)
                if mr == 5:
                    mr = 4
                _tile(mr, vn, K, a, aoff + m * lda, lda, wp, pw + 16 * v0, width, out,
                      ooff + m * ldo + n0 + 16 * v0, ldo, zero)
                m += mr


@njit(types.void(_I, _I, _I, _I, _I, F32P, F32P, F32P, F32P), **_jit)
def gemm_bias(M, K, N, c0, c1, x, wp, bias, out):
    """Input projection of many steps at once, columns [c0, c1) of N:
    out[M, c0:c1] = x[M, K] @ Wt[K, c0:c1] + bias[c0:c1] (rows of out N apart;
    c0, c1 as for ``panel_gemm``)."""
    for m in range(M):
        o = m * N
        for n in range(c0, c1):
            out[o + n] = bias[n]
    panel_gemm(M, K, N, c0, c1, x, 0, K, wp, 0, out, 0, N, 0)
