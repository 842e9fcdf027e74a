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
as the vectors allow, and one chunk of 4 frames costs one pass.

Results differ from the conv's direct sums by rounding (the basis as stored
is float32; the FFT uses float32 twiddles computed in float64).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .. import config
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
    """(bit-reversal permutation int64[N], cos float32[N/2], sin float32[N/2])
    of an N-point FFT."""
    bits = N.bit_length() - 1
    rev = np.array([int(format(i, f"0{bits}b")[::-1], 2) for i in range(N)], np.int64)
    t = 2.0 * np.pi * np.arange(N // 2) / N
    return rev, np.cos(t).astype(np.float32), np.sin(t).astype(np.float32)


@njit(**config.jit_options())
def stft(x, fp, ip, geo, y):
    """y[b, c, p] (flat, C = 2F channels, P positions) for x[b, 0, :] (flat,
    T samples a row; T, the hop and P from the conv geometry ``geo``):
    channel k < F is Re, channel F + k is -s Im of the FFT of frame p
    (samples p*hop .. p*hop + N - 1, times the window), plus the bias.
    fp: window[N], cos[N/2], sin[N/2], bias[2F]; ip: N, F, s, then the
    bit-reversal permutation.  (Few arguments: each costs dispatch time.)"""
    N, F, s = ip[0], ip[1], ip[2]
    rev = ip[3:]
    window = fp[:N]
    cos = fp[N:N + N // 2]
    sin = fp[N + N // 2:2 * N]
    bias = fp[2 * N:]
    T, hop, P = geo[_G_W], geo[_G_SW], geo[_G_OW]
    out = y
    B = x.size // T
    M = B * P
    L = LANES
    re = np.empty(N * L, np.float32)
    im = np.empty(N * L, np.float32)
    rp, ip = re.ctypes, im.ctypes
    neg = np.float32(-s)
    base = np.zeros(L, np.int64)
    for g0 in range(0, M, L):
        n_in = min(L, M - g0)
        for l in range(n_in):
            m = g0 + l
            base[l] = (m // P) * T + (m % P) * hop
        im[:] = np.float32(0)
        if n_in < L:
            re[:] = np.float32(0)
        for n in range(N):          # frame samples, windowed, to bit-reversed rows
            wn = window[n]
            r = rev[n] * L
            for l in range(n_in):
                re[r + l] = x[base[l] + n] * wn
        half = 1
        while half < N:
            step = N // (2 * half)
            for j in range(half):
                wr = cos[j * step]
                wi = -sin[j * step]         # e^(-2 pi i j / (2 half))
                for i in range(j, N, 2 * half):
                    _butterfly(rp, ip, i * L, (i + half) * L, wr, wi)
            half *= 2
        for l in range(n_in):
            m = g0 + l
            o = (m // P) * 2 * F * P + m % P
            for k in range(F):
                out[o + k * P] = re[k * L + l] + bias[k]
                out[o + (F + k) * P] = neg * im[k * L + l] + bias[F + k]


class STFTConv:
    """A Conv's windowed-DFT weights (``match_windowed_dft``) and its bias,
    ready for ``stft``; called as the conv kernels are, ``(x, w, geo, y)``
    (``w`` unused)."""

    def __init__(self, match, bias):
        window, self.F, self.s = match
        N = window.size
        rev, cos, sin = plan(N)
        b = np.zeros(2 * self.F, np.float32) if bias is None else bias
        self.fp = np.ascontiguousarray(np.concatenate([window, cos, sin, b]), np.float32)
        self.ip = np.concatenate([np.array([N, self.F, self.s], np.int64), rev])

    def __call__(self, x, w, geo, y):
        stft(x, self.fp, self.ip, geo, y)
