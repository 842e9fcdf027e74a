"""Convolutions that are a short-time Fourier transform, run as FFTs.

An STFT exported as a Conv1d (Silero VAD's first layer: one input channel,
kernel N = 256, stride = the hop) has as weights a windowed real DFT basis:
rows ``window[n] * cos(2 pi k n / N)`` for k = 0 .. F-1, then
``s * window[n] * sin(2 pi k n / N)`` (s = +1 or -1).  ``match_windowed_dft``
recognises such weights at load (they are compared with the basis built
from their first row, the window, within 1e-5 of their largest value), and
``stft`` computes the conv's output by a radix-2 FFT of each windowed frame:
about 5 N log2 N floating-point operations per frame instead of the conv's
2 N x 2F multiply-adds (N = 256, F = 129: 10 k against 132 k).

The FFT runs eight frames at once, one per float32 lane of a 256-bit vector
(its innermost loops run over the lanes, which LLVM turns into vector
instructions), so a batch of streams or a long input is as fast per frame
as the vectors allow, and one chunk of 4 frames costs one pass.  A real
frame of N samples is one N/2-point complex FFT (even samples as real
parts, odd as imaginary) and a split (see ``stft``): half the butterflies
of an N-point FFT.  Frames go into the lanes by 8 x 8 transposes of
vectors (``_gather8``; a last, partial pass fills its spare lanes with its
first frame) and come out, per run of frames of one row, as runs of each
channel.  Measured at Silero's shape (N 256, hop 128, 4 frames a chunk;
thread time, minimum of 21 interleaved repeats, shared VM): batch 128
4.4 -> 2.8 us per chunk, batch 1 9.2 -> 7.9, batch 2-5 5.3-5.9 -> 3.8-4.5;
in the Silero graph at batch 64-256 (the capacity breakdown, medians of 5
alternating runs) 4.6-4.8 -> 3.1.  (Before: an N-point FFT with a scalar
gather and scatter, which took 1.8 and 2.3 us per chunk at batch 128, the
butterflies 0.8.)  Each lane is one frame throughout: a frame's result
does not depend on the frames beside it (bitwise; a stream's result is the
same alone and in any batch of a StreamPool).

Results differ from the conv's direct sums by rounding (the basis as stored
is float32; the FFT uses float32 twiddles computed in float64).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .. import config
from .common import fptr as _fptr
from .conv import G_OW as _G_OW, G_SW as _G_SW, G_W as _G_W

#: frames per pass: float32 lanes of an AVX2 vector
LANES = 8


@intrinsic
def _butterfly(typingctx, re, im, a, b, wr, wi):
    """One radix-2 butterfly on LANES frames at once, as <LANES x float>
    vectors (LLVM does not vectorize the same loop over the lanes written in
    Python: it cannot tell the two rows apart):
    t = w * z[b]; z[b] = z[a] - t; z[a] = z[a] + t."""
    sig = types.void(types.CPointer(types.float32), types.CPointer(types.float32),
                     types.int64, types.int64, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        re, im, a, b, wr, wi = args
        vty = ir.VectorType(ir.FloatType(), LANES)
        undef = ir.Constant(vty, ir.Undefined)
        zero = ir.Constant(ir.IntType(32), 0)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

        def ptr(base, off):
            return builder.bitcast(builder.gep(base, [off], inbounds=True), vty.as_pointer())

        def bcast(v):
            return builder.shuffle_vector(builder.insert_element(undef, v, zero), undef, splat)
        vr, vi = bcast(wr), bcast(wi)
        pra, prb, pia, pib = ptr(re, a), ptr(re, b), ptr(im, a), ptr(im, b)
        ar, br = builder.load(pra, align=4), builder.load(prb, align=4)
        ai, bi = builder.load(pia, align=4), builder.load(pib, align=4)
        tr = builder.fsub(builder.fmul(vr, br), builder.fmul(vi, bi))
        ti = builder.fadd(builder.fmul(vr, bi), builder.fmul(vi, br))
        builder.store(builder.fsub(ar, tr), prb, align=4)
        builder.store(builder.fsub(ai, ti), pib, align=4)
        builder.store(builder.fadd(ar, tr), pra, align=4)
        builder.store(builder.fadd(ai, ti), pia, align=4)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _gather8(typingctx, x, base, n0, window, rev, dst):
    """Samples n0 .. n0+7 of LANES frames (frame l at x + base[l]), times the
    window, to rows rev[n0+i] of ``dst`` (LANES floats a row: lane l = frame
    l): eight vector loads, an 8 x 8 transpose in 24 shuffles
    (unpack, shufps, vperm2f128), eight multiplies and stores, instead of
    64 scalar loads and stores (LANES is 8: the transpose is written for it)."""
    f32p = types.CPointer(types.float32)
    i64p = types.CPointer(types.int64)
    sig = types.void(f32p, i64p, types.int64, f32p, i64p, f32p)

    def codegen(context, builder, signature, args):
        x, base, n0, window, rev, dst = args
        vty = ir.VectorType(ir.FloatType(), LANES)
        i32 = ir.IntType(32)
        undef = ir.Constant(vty, ir.Undefined)

        def shuf(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, LANES), mask))
        rows = []
        for l in range(LANES):
            off = builder.add(builder.load(builder.gep(base, [ir.Constant(ir.IntType(64), l)])),
                              n0)
            p = builder.bitcast(builder.gep(x, [off]), vty.as_pointer())
            rows.append(builder.load(p, align=4))
        t = []
        for j in range(0, LANES, 2):
            t.append(shuf(rows[j], rows[j + 1], [0, 8, 1, 9, 4, 12, 5, 13]))
            t.append(shuf(rows[j], rows[j + 1], [2, 10, 3, 11, 6, 14, 7, 15]))
        lo, hi = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        u = [shuf(t[0], t[2], lo), shuf(t[0], t[2], hi), shuf(t[1], t[3], lo),
             shuf(t[1], t[3], hi), shuf(t[4], t[6], lo), shuf(t[4], t[6], hi),
             shuf(t[5], t[7], lo), shuf(t[5], t[7], hi)]
        cols = [None] * LANES
        for i in range(4):
            cols[i] = shuf(u[i], u[i + 4], [0, 1, 2, 3, 8, 9, 10, 11])
            cols[i + 4] = shuf(u[i], u[i + 4], [4, 5, 6, 7, 12, 13, 14, 15])
        zero = ir.Constant(i32, 0)
        splat = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
        for i in range(LANES):
            n = builder.add(n0, ir.Constant(ir.IntType(64), i))
            wv = builder.load(builder.gep(window, [n]))
            wv = builder.shuffle_vector(builder.insert_element(undef, wv, zero), undef, splat)
            r = builder.mul(builder.load(builder.gep(rev, [n])),
                            ir.Constant(ir.IntType(64), LANES))
            p = builder.bitcast(builder.gep(dst, [r]), vty.as_pointer())
            builder.store(builder.fmul(cols[i], wv), p, align=4)
        return context.get_dummy_value()
    return sig, codegen


def match_windowed_dft(w, tol=1e-5):
    """(window float32[N], F, s) when ``w`` [C, 1, N] (float32) is a windowed
    real DFT basis as described above (C = 2F, F <= N/2 + 1, N a power of two
    >= 8), else None."""
    if w.ndim != 3 or w.shape[1] != 1 or w.shape[0] % 2:
        return None
    C, _, N = w.shape
    F = C // 2
    if N < 8 or N & (N - 1) or F > N // 2 + 1 or F < 1:
        return None
    w2 = w[:, 0, :].astype(np.float64)
    scale = float(np.abs(w2).max())
    if not np.isfinite(scale) or scale == 0.0:
        return None
    window = w2[0]
    ang = 2.0 * np.pi * np.outer(np.arange(F), np.arange(N)) / N
    if np.abs(w2[:F] - window * np.cos(ang)).max() > tol * scale:
        return None
    sin = window * np.sin(ang)
    for s in (1, -1):
        if np.abs(w2[F:] - s * sin).max() <= tol * scale:
            return window.astype(np.float32), F, s
    return None


def plan(N):
    """(rows int64[N], cos float32[N/2], sin float32[N/2]) of the FFT of a
    real N-sample frame as an N/2-point complex FFT: sample n goes to row
    rows[n] of the FFT's [N/2 real rows | N/2 imaginary rows] (even samples
    the real parts, odd the imaginary ones, each in bit-reversed order);
    cos and sin of 2 pi k / N."""
    Nh = N // 2
    bits = Nh.bit_length() - 1
    rev = [int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(Nh)]
    rows = np.array([rev[n >> 1] + (n & 1) * Nh for n in range(N)], np.int64)
    t = 2.0 * np.pi * np.arange(N // 2) / N
    return rows, np.cos(t).astype(np.float32), np.sin(t).astype(np.float32)


@njit(**config.jit_options())
def stft(x, fp, ip, geo, y):
    """y[b, c, p] (flat, C = 2F channels, P positions) for x[b, 0, :] (flat,
    T samples a row; T, the hop and P from the conv geometry ``geo``):
    channel k < F is Re, channel F + k is -s Im of the FFT of frame p
    (samples p*hop .. p*hop + N - 1, times the window), plus the bias.
    fp: window[N], cos[N/2], sin[N/2], bias[2F]; ip: N, F, s, then the rows
    of ``plan``.  (Few arguments: each costs dispatch time.)

    A real frame's FFT is an N/2-point complex FFT: z[m] = x[2m] + i x[2m+1],
    Z = FFT(z); then with E = (Z[k] + conj Z[N/2-k]) / 2 (the even samples'
    FFT) and O = (Z[k] - conj Z[N/2-k]) / 2i (the odd samples'),
    X[k] = E + e^(-2 pi i k / N) O.  Each lane is one frame throughout, so a
    frame's result does not depend on the frames beside it (a stream's is
    the same alone or in any batch)."""
    N, F, s = ip[0], ip[1], ip[2]
    rows = ip[3:]
    window = fp[:N]
    cos = fp[N:N + N // 2]
    sin = fp[N + N // 2:2 * N]
    bias = fp[2 * N:]
    T, hop, P = geo[_G_W], geo[_G_SW], geo[_G_OW]
    B = x.size // T
    M = B * P
    L = LANES
    C = 2 * F
    Nh = N // 2
    # one allocation: the FFT's real rows then its imaginary rows (LANES floats
    # a row, lane l = frame l of the pass), the pass's outputs [C, LANES]
    work = np.empty((N + C) * L, np.float32)
    base = np.zeros(L, np.int64)
    xp, yp, wp = _fptr(x), _fptr(y), _fptr(window)
    zp = _fptr(work)
    rp = zp
    ipp = _fptr(work[Nh * L:])
    tp = _fptr(work[N * L:])
    rows_p = rows.ctypes
    neg = np.float32(-s)
    h = np.float32(0.5)
    for g0 in range(0, M, L):
        n_in = min(L, M - g0)
        for l in range(L):
            # (the lanes of a last, partial pass repeat its first frame: computed,
            # never written out; lanes do not mix, so it changes nothing)
            m = g0 + (l if l < n_in else 0)
            base[l] = (m // P) * T + (m % P) * hop
        for n0 in range(0, N, 8):
            _gather8(xp, base.ctypes, n0, wp, rows_p, zp)
        half = 1
        while half < Nh:
            step = N // (2 * half)
            for j in range(half):
                wr = cos[j * step]
                wi = -sin[j * step]         # e^(-2 pi i j / (2 half))
                for i in range(j, Nh, 2 * half):
                    _butterfly(rp, ipp, i * L, (i + half) * L, wr, wi)
            half *= 2
        # X[k] from Z[k] and Z[N/2 - k], plus the bias: a vector pass a channel
        for k in range(F):
            a = (k % Nh) * L
            b = ((Nh - k) % Nh) * L
            if k < Nh:
                c, sn = cos[k], sin[k]
            else:
                c, sn = np.float32(-1), np.float32(0)
            c1 = k * L
            c2 = (F + k) * L
            bre, bim = bias[k], bias[F + k]
            for l in range(L):
                ar, ai, br, bi = rp[a + l], ipp[a + l], rp[b + l], ipp[b + l]
                er = h * (ar + br)
                ei = h * (ai - bi)
                orr = h * (ai + bi)
                oi = h * (br - ar)
                tp[c1 + l] = (er + (c * orr + sn * oi)) + bre
                tp[c2 + l] = neg * (ei + (c * oi - sn * orr)) + bim
        # to y: a frame's channels are P apart, frames of a row next to each
        # other: each run of lanes from one row is a run of each channel
        l0 = 0
        while l0 < n_in:
            m0 = g0 + l0
            row, p0 = m0 // P, m0 % P
            cnt = min(P - p0, n_in - l0)
            d = row * C * P + p0
            if cnt == 4:                    # (Silero: 4 frames a row)
                for ch in range(C):
                    for q in range(4):
                        yp[d + ch * P + q] = tp[ch * L + l0 + q]
            else:
                for ch in range(C):
                    for q in range(cnt):
                        yp[d + ch * P + q] = tp[ch * L + l0 + q]
            l0 += cnt


class STFTConv:
    """A Conv's windowed-DFT weights (``match_windowed_dft``) and its bias,
    ready for ``stft``; called as the conv kernels are, ``(x, w, geo, y)``
    (``w`` unused)."""

    def __init__(self, match, bias):
        window, self.F, self.s = match
        N = window.size
        rows, cos, sin = plan(N)
        b = np.zeros(2 * self.F, np.float32) if bias is None else bias
        self.fp = np.ascontiguousarray(np.concatenate([window, cos, sin, b]), np.float32)
        self.ip = np.concatenate([np.array([N, self.F, self.s], np.int64), rows])

    def __call__(self, x, w, geo, y):
        stft(x, self.fp, self.ip, geo, y)
