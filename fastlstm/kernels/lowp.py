"""Recurrent steps on reduced-precision weights: int8 (integer products) and bf16.

Every kernel here has the float path's C signatures (``common.STEP_SIG``,
``common.GEMM_SIG``), so the front end runs them unchanged: the pointers it
passes simply point at other arrays (``fastlstm.pack_lowp``):

int8 (``kernels.int8``)
    xp      X quantized row by row beforehand (``int8.quantize_rows``)
            and projected by ``int8_gemm`` *without* the bias;
    R       an int8 weight blob of Rt[H, G*Hp];
    rb      the bias Wb + Rb, tile-interleaved [G*Hp], added after the
            recurrent product, as onnxruntime adds it: (X.W + H.R) + B;
    ws      [B, G*Hp] pre-activations, then [B, qrow_floats(Hp)] of
            quantized h.
    Each step quantizes h_{t-1}: per row (fastlstm's own int8, to 0..127)
    or all rows with one scale (onnxruntime's DynamicQuantizeLSTM, 0..255).
bf16
    W, R    bfloat16 panels (``pack.to_panels`` layout, 2 bytes per weight),
            widened to float32 in registers (a shift) before each FMA:
            float32 activations and accumulation.

After the product the gate math is the float kernels' own (``lstm_gates``,
``rnn_gates`` repeat ``kernels.lstm`` / ``kernels.rnn`` after their GEMM).
"""
import numpy as np
from llvmlite import ir
from numba import cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import activations as act
from . import int8
from .common import (FP_ALPHA0, FP_ALPHA1, FP_ALPHA2, FP_BETA0, FP_BETA1, FP_BETA2, FP_CLIP,
                     GEMM_SIG, IP_ACT0, IP_ACT1, IP_ACT2, IP_FLAG, IP_H, IP_HAS_CLIP, IP_HP,
                     IP_BATCH, IP_ORDER, IP_P0, IP_P1, STEP_SIG, TILE, write_y)
from .. import config

F32P = types.CPointer(types.float32)
I64P = types.CPointer(types.int64)
_I = types.int64
_jit = config.jit_options()
_ONE = np.float32(1.0)
_Q_OWN = np.float32(127.0)      # fastlstm's rows: 7 bits, never saturating (int8.qdot)
_Q_ORT = np.float32(255.0)      # onnxruntime's rows


# ---------------------------------------------------------------- gate math

@njit(types.void(_I, F32P, _I, F32P, F32P, F32P, F32P, I64P, I64P, F32P), **_jit)
def lstm_gates(nact, ws, N, P, h_out, c, y, yoff, ip, fp):
    """LSTM gates and cell of tiles p0..p1 from pre-activations ws[b*N + ...]
    (kernels.lstm after its product, the same operations)."""
    H = ip[IP_H]
    Hp = ip[IP_HP]
    a_f = ip[IP_ACT0]
    a_g = ip[IP_ACT1]
    a_h = ip[IP_ACT2]
    coupled = ip[IP_FLAG] != 0
    has_clip = ip[IP_HAS_CLIP] != 0
    lim = fp[FP_CLIP]
    T = TILE
    GT = 4 * T
    fast = (a_f == act.SIGMOID and a_g == act.TANH and a_h == act.TANH and not has_clip
            and not coupled)
    for b in range(nact):
        for p in range(ip[IP_P0], ip[IP_P1]):
            j0 = p * T
            a = b * N + p * GT
            s = b * Hp + j0
            if fast:
                for jj in range(T):
                    cp = c[s + jj]
                    gi = act.fsigmoid(ws[a + jj] + P[j0 + jj] * cp)
                    gf = act.fsigmoid(ws[a + 2 * T + jj] + P[2 * Hp + j0 + jj] * cp)
                    cn = gf * cp + gi * act.ftanh(ws[a + 3 * T + jj])
                    c[s + jj] = cn
                    go = act.fsigmoid(ws[a + T + jj] + P[Hp + j0 + jj] * cn)
                    h_out[s + jj] = go * act.ftanh(cn)
                write_y(y, yoff[b], h_out, s, j0, min(T, H - j0))
                continue
            for jj in range(T):
                cp = c[s + jj]
                ws[a + jj] += P[j0 + jj] * cp
                ws[a + 2 * T + jj] += P[2 * Hp + j0 + jj] * cp
            if has_clip:
                act.clip(ws, a, T, lim)
                act.clip(ws, a + 2 * T, 2 * T, lim)
            act.apply(a_f, fp[FP_ALPHA0], fp[FP_BETA0], ws, a, T)
            if coupled:
                for jj in range(T):
                    ws[a + 2 * T + jj] = _ONE - ws[a + jj]
            else:
                act.apply(a_f, fp[FP_ALPHA0], fp[FP_BETA0], ws, a + 2 * T, T)
            act.apply(a_g, fp[FP_ALPHA1], fp[FP_BETA1], ws, a + 3 * T, T)
            for jj in range(T):
                cn = ws[a + 2 * T + jj] * c[s + jj] + ws[a + jj] * ws[a + 3 * T + jj]
                c[s + jj] = cn
                ws[a + T + jj] += P[Hp + j0 + jj] * cn
                ws[a + 3 * T + jj] = cn
            if has_clip:
                act.clip(ws, a + T, T, lim)
            act.apply(a_f, fp[FP_ALPHA0], fp[FP_BETA0], ws, a + T, T)
            act.apply(a_h, fp[FP_ALPHA2], fp[FP_BETA2], ws, a + 3 * T, T)
            for jj in range(T):
                h_out[s + jj] = ws[a + T + jj] * ws[a + 3 * T + jj]
            write_y(y, yoff[b], h_out, s, j0, min(T, H - j0))


@njit(types.void(_I, F32P, _I, F32P, F32P, I64P, I64P, F32P), **_jit)
def rnn_gates(nact, ws, N, h_out, y, yoff, ip, fp):
    """RNN activation of tiles p0..p1 from pre-activations ws[b*N + ...]."""
    H = ip[IP_H]
    Hp = ip[IP_HP]
    j0 = ip[IP_P0] * TILE
    nj = ip[IP_P1] * TILE - j0
    for b in range(nact):
        if ip[IP_HAS_CLIP] != 0:
            act.clip(ws, b * N + j0, nj, fp[FP_CLIP])
        act.apply(ip[IP_ACT0], fp[FP_ALPHA0], fp[FP_BETA0], ws, b * N + j0, nj)
        for j in range(nj):
            h_out[b * Hp + j0 + j] = ws[b * N + j0 + j]
        write_y(y, yoff[b], h_out, b * Hp + j0, j0, min(nj, H - j0))


# ---------------------------------------------------------------- int8

def int8_ws_floats(gates):
    """Scratch floats per batch row of an int8 step (pre-activations, then
    quantized h), as ``ws_floats(batch, hp)``."""
    def ws(batch, hp):
        return batch * (gates * hp + int8.qrow_floats(hp))
    return ws


@njit(types.void(_I, _I, F32P, I64P, F32P, F32P, F32P, F32P, I64P, types.boolean), **_jit)
def _int8_preact(nact, G, xp, xoff, R, rb, h_in, ws, ip, per_row):
    """ws[b*N + n] = (xp[xoff[b] + n] + (q(h_in) . R)[b, n]) + rb[n] for the
    step's columns: h quantized into ws past the pre-activations, the raw
    products into the pre-activations' own place, then dequantized in place."""
    H = ip[IP_H]
    Hp = ip[IP_HP]
    N = G * Hp
    c0 = ip[IP_P0] * G * TILE
    c1 = ip[IP_P1] * G * TILE
    Q = int8.qrow_floats(Hp)
    qh = nact * N
    int8.quantize_state(nact, h_in, Hp, H, per_row, _Q_OWN if per_row else _Q_ORT, ws, qh,
                        Q)
    int8.qdot(nact, H, N, c0, c1, ws, qh, Q, R, ws, 0, N)
    _, fs, fc, fz, _ = int8.wblob_layout(H, N)
    KG = int8.pad4(H) // 4
    for b in range(nact):
        row = qh + b * Q
        sa = ws[row + KG]
        za = np.int64(ws[row + KG + 1])
        rz = np.int64(ws[row + KG + 2]) - H * za
        o = b * N
        xo = xoff[b]
        for n in range(c0, c1):
            f = int8.corrected(ws, o + n, R, fc + n, fz + n, za, rz)
            ws[o + n] = (xp[xo + n] + f * (sa * R[fs + n])) + rb[n]


@cfunc(STEP_SIG, **_jit)
def lstm_int8_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    _int8_preact(nact, 4, xp, xoff, R, rb, h_in, ws, ip, True)
    lstm_gates(nact, ws, 4 * ip[IP_HP], P, h_out, c, y, yoff, ip, fp)


@cfunc(STEP_SIG, **_jit)
def lstm_int8_ort_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    _int8_preact(nact, 4, xp, xoff, R, rb, h_in, ws, ip, False)
    lstm_gates(nact, ws, 4 * ip[IP_HP], P, h_out, c, y, yoff, ip, fp)


@cfunc(STEP_SIG, **_jit)
def rnn_int8_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    _int8_preact(nact, 1, xp, xoff, R, rb, h_in, ws, ip, True)
    rnn_gates(nact, ws, ip[IP_HP], h_out, y, yoff, ip, fp)


@cfunc(GEMM_SIG, **_jit)
def int8_gemm(M, Kq, N, c0, c1, x, w, bias, out):
    """The input projection of quantized rows (``Kq`` float32 units each) with
    the int8 blob ``w`` (its K in its header); ``bias`` as stored (zeros: the
    step adds the bias)."""
    int8.qgemm(M, np.int64(w[0]), N, c0, c1, x, 0, Kq, w, out, 0, N, bias)


# ---------------------------------------------------------------- bf16

LANES = config.TILE
PANEL = config.PANEL
_MAXR = 2       # AVX2: <16 x float> is two ymm registers (see bf16_panel_gemm)


def _make_bf16_tile(MR, NV):
    @intrinsic
    def tile(typingctx, K, a, aoff, lda, w, woff, ldw, out, ooff, ldo):
        # as simd's float tile, the weights bf16 (uint16 element offsets)
        sig = types.void(_I, F32P, _I, _I, F32P, _I, _I, F32P, _I, _I)

        def codegen(context, builder, signature, args):
            K, a, aoff, lda, w, woff, ldw, out, ooff, ldo = args
            f32 = ir.FloatType()
            i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
            vty = ir.VectorType(f32, LANES)
            hty = ir.VectorType(i16, LANES)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]), f"llvm.fma.v{LANES}f32")
            undef = ir.Constant(vty, ir.Undefined)
            zero32 = ir.Constant(i32, 0)
            splat = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
            zero16 = ir.Constant(hty, [0] * LANES)
            wh = builder.bitcast(w, i16.as_pointer())

            def vptr(base, off):
                p = builder.gep(base, [off], inbounds=True)
                return builder.bitcast(p, vty.as_pointer())

            def const(v):
                return ir.Constant(i64, v)

            accs = []
            for r in range(MR):
                row = []
                base = builder.add(ooff, builder.mul(const(r), ldo))
                for v in range(NV):
                    slot = cgutils.alloca_once(builder, vty)
                    builder.store(builder.load(vptr(out, builder.add(base, const(LANES * v))),
                                               align=4), slot)
                    row.append(slot)
                accs.append(row)
            with cgutils.for_range(builder, K) as loop:
                k = loop.index
                wrow = builder.add(woff, builder.mul(k, ldw))
                wv = []
                for v in range(NV):
                    p = builder.gep(wh, [builder.add(wrow, const(LANES * v))], inbounds=True)
                    h = builder.load(builder.bitcast(p, hty.as_pointer()), align=2)
                    # bf16 -> float32 is the bf16 bits above 16 zero bits: one
                    # interleave with zeros (vpunpcklwd / vpunpckhwd) per 8 weights;
                    # the panels hold each 16 in the order that makes the two
                    # halves columns 0-7 and 8-15 (pack_lowp.BF16_ORDER)
                    lo = builder.shuffle_vector(zero16, h, ir.Constant(
                        ir.VectorType(i32, 16), [x for j in (0, 1, 2, 3, 8, 9, 10, 11)
                                                 for x in (0, 16 + j)]))
                    hi = builder.shuffle_vector(zero16, h, ir.Constant(
                        ir.VectorType(i32, 16), [x for j in (4, 5, 6, 7, 12, 13, 14, 15)
                                                 for x in (0, 16 + j)]))
                    f8 = ir.VectorType(f32, 8)
                    wv.append(builder.shuffle_vector(builder.bitcast(lo, f8),
                                                     builder.bitcast(hi, f8),
                                                     ir.Constant(ir.VectorType(i32, 16),
                                                                 list(range(16)))))
                for r in range(MR):
                    aidx = builder.add(builder.add(aoff, builder.mul(const(r), lda)), k)
                    av = builder.load(builder.gep(a, [aidx], inbounds=True))
                    vec = builder.insert_element(undef, av, zero32)
                    vec = builder.shuffle_vector(vec, undef, splat)
                    for v in range(NV):
                        acc = builder.load(accs[r][v])
                        builder.store(builder.call(fma, [vec, wv[v], acc]), accs[r][v])
            for r in range(MR):
                base = builder.add(ooff, builder.mul(const(r), ldo))
                for v in range(NV):
                    builder.store(builder.load(accs[r][v]),
                                  vptr(out, builder.add(base, const(LANES * v))), align=4)
            return context.get_dummy_value()
        return sig, codegen
    tile.__name__ = f"btile_{MR}x{NV}"
    return tile


b1_1, b1_2, b1_3, b1_4 = (_make_bf16_tile(1, v) for v in range(1, 5))
b2_1, b2_2 = (_make_bf16_tile(2, v) for v in range(1, 3))


@njit(types.void(_I, _I, _I, F32P, _I, _I, F32P, _I, _I, F32P, _I, _I), **_jit)
def _btile(mr, nv, K, a, aoff, lda, w, woff, ldw, out, ooff, ldo):
    if mr == 2:
        if nv == 2:
            b2_2(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        else:
            b2_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
    else:
        if nv == 4:
            b1_4(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        elif nv == 3:
            b1_3(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        elif nv == 2:
            b1_2(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        else:
            b1_1(K, a, aoff, lda, w, woff, ldw, out, ooff, ldo)


@njit(types.void(_I, _I, _I, _I, _I, F32P, _I, _I, F32P, _I, F32P, _I, _I, _I), **_jit)
def bf16_panel_gemm(M, K, N, c0, c1, a, aoff, lda, wp, woff, out, ooff, ldo, rev):
    """``gemm.panel_gemm`` with bf16 panels (``wp`` holds uint16 pairs; ``woff``
    counts bf16 elements)."""
    first = c0 // PANEL
    last = (c1 + PANEL - 1) // PANEL - 1
    for q in range(last - first + 1):
        p = last - q if rev != 0 else first + q
        n0 = p * PANEL
        width = min(PANEL, N - n0)
        nv = width // 16
        m = 0
        while m < M:
            mr = min(_MAXR, M - m)
            if mr == 1:
                _btile(1, nv, K, a, aoff + m * lda, lda, wp, woff + n0 * K, width, out,
                       ooff + m * ldo + n0, ldo)
            else:
                # two rows: 32 columns at a time (8 ymm accumulators; a 2 x 64
                # tile needs 16 and spills on AVX2)
                for v0 in range(0, nv, 2):
                    _btile(2, min(2, nv - v0), K, a, aoff + m * lda, lda, wp,
                           woff + n0 * K + 16 * v0, width, out, ooff + m * ldo + n0 + 16 * v0,
                           ldo)
            m += mr


@cfunc(GEMM_SIG, **_jit)
def bf16_gemm(M, K, N, c0, c1, x, wp, bias, out):
    """``gemm.gemm_bias`` with bf16 panels."""
    for m in range(M):
        o = m * N
        for n in range(c0, c1):
            out[o + n] = bias[n]
    bf16_panel_gemm(M, K, N, c0, c1, x, 0, K, wp, 0, out, 0, N, 0)


@njit(types.void(_I, _I, F32P, I64P, F32P, F32P, F32P, I64P), **_jit)
def _bf16_preact(nact, G, xp, xoff, R, h_in, ws, ip):
    H = ip[IP_H]
    Hp = ip[IP_HP]
    N = G * Hp
    c0 = ip[IP_P0] * G * TILE
    c1 = ip[IP_P1] * G * TILE
    for b in range(nact):
        for n in range(c0, c1):
            ws[b * N + n] = xp[xoff[b] + n]
    bf16_panel_gemm(nact, H, N, c0, c1, h_in, 0, Hp, R, 0, ws, 0, N, ip[IP_ORDER])


def bf16_ws_floats(gates):
    def ws(batch, hp):
        return batch * gates * hp
    return ws


@cfunc(STEP_SIG, **_jit)
def lstm_bf16_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    _bf16_preact(nact, 4, xp, xoff, R, h_in, ws, ip)
    lstm_gates(nact, ws, 4 * ip[IP_HP], P, h_out, c, y, yoff, ip, fp)


@cfunc(STEP_SIG, **_jit)
def rnn_bf16_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    _bf16_preact(nact, 1, xp, xoff, R, h_in, ws, ip)
    rnn_gates(nact, ws, ip[IP_HP], h_out, y, yoff, ip, fp)


# ---------------------------------------------------------------- GRU
#
# As kernels.gru: linear_before_reset = 1 takes one product Ht-1 . [Rz Rr Rh]
# (rb holds Rbh on the h columns); linear_before_reset = 0 takes Ht-1 . [Rz Rr]
# (R's first part), then (rt (.) Ht-1) . Rh (its second part).  Steps of these
# layers always run whole (the front end never splits them by tiles), so the
# two products follow each other in one call.

def gru_ws_floats(batch, hp):
    """Per row: products (3 Hp), zt and rt (.) Ht-1 (2 Hp), two quantized rows."""
    return batch * (5 * hp + 2 * int8.qrow_floats(hp))


@njit(types.void(_I, _I, _I, _I, _I, F32P, _I, _I, F32P, F32P, F32P, _I, _I, _I), **_jit)
def _int8_product(nact, K, N, c0, c1, a, aoff, lda, R, rb, ws, dst, ld, qoff):
    """ws[dst + b*ld + n] = dequant(q(row b of a) . R[:, n]) + rb[n], c0 <= n < c1:
    rows quantized one by one (0..127) into ws at ``qoff``."""
    Q = int8.qrow_floats(K)
    int8.quantize_state(nact, int8.ptr_add(a, aoff), lda, K, True, _Q_OWN, ws, qoff, Q)
    int8.qdot(nact, K, N, c0, c1, ws, qoff, Q, R, ws, dst, ld)
    _, fs, fc, fz, _ = int8.wblob_layout(K, N)
    KG = int8.pad4(K) // 4
    for b in range(nact):
        row = qoff + b * Q
        sa = ws[row + KG]
        za = np.int64(ws[row + KG + 1])
        rz = np.int64(ws[row + KG + 2]) - K * za
        o = dst + b * ld
        for n in range(c0, c1):
            f = int8.corrected(ws, o + n, R, fc + n, fz + n, za, rz)
            ws[o + n] = f * (sa * R[fs + n]) + rb[n]


@njit(types.void(_I, F32P, I64P, F32P, F32P, F32P, F32P, F32P, I64P, F32P, I64P, F32P,
                 types.boolean), **_jit)
def _gru(nact, xp, xoff, R, rb, h_in, h_out, y, yoff, ws, ip, fp, bf16):
    H = ip[IP_H]
    Hp = ip[IP_HP]
    a_f = ip[IP_ACT0]
    a_g = ip[IP_ACT1]
    lbr = ip[IP_FLAG] != 0
    has_clip = ip[IP_HAS_CLIP] != 0
    lim = fp[FP_CLIP]
    T = TILE
    p0 = ip[IP_P0]
    p1 = ip[IP_P1]
    B = ip[IP_BATCH]
    N3 = 3 * Hp
    zoff = B * N3               # zt, then rt (.) Ht-1, then quantized rows
    rhoff = zoff + B * Hp
    qoff = rhoff + B * Hp
    if lbr:
        if bf16:
            for b in range(nact):
                for n in range(p0 * 3 * T, p1 * 3 * T):
                    ws[b * N3 + n] = rb[n]
            bf16_panel_gemm(nact, H, N3, p0 * 3 * T, p1 * 3 * T, h_in, 0, Hp, R, 0, ws, 0,
                            N3, ip[IP_ORDER])
        else:
            _int8_product(nact, H, N3, p0 * 3 * T, p1 * 3 * T, h_in, 0, Hp, R, rb, ws, 0, N3,
                          qoff)
        for b in range(nact):
            for p in range(p0, p1):
                j0 = p * T
                a = b * N3 + p * 3 * T
                x = xoff[b] + p * 3 * T
                s = b * Hp + j0
                for jj in range(2 * T):
                    ws[a + jj] += xp[x + jj]
                if has_clip:
                    act.clip(ws, a, 2 * T, lim)
                act.apply(a_f, fp[FP_ALPHA0], fp[FP_BETA0], ws, a, 2 * T)
                for jj in range(T):
                    ws[a + 2 * T + jj] = xp[x + 2 * T + jj] + ws[a + T + jj] * ws[a + 2 * T + jj]
                if has_clip:
                    act.clip(ws, a + 2 * T, T, lim)
                act.apply(a_g, fp[FP_ALPHA1], fp[FP_BETA1], ws, a + 2 * T, T)
                for jj in range(T):
                    z = ws[a + jj]
                    h_out[s + jj] = (_ONE - z) * ws[a + 2 * T + jj] + z * h_in[s + jj]
                write_y(y, yoff[b], h_out, s, j0, min(T, H - j0))
        return
    # linear_before_reset = 0: [z r] first, over the step's tiles
    N2 = 2 * Hp
    if bf16:
        for b in range(nact):
            for n in range(p0 * 2 * T, p1 * 2 * T):
                ws[b * N2 + n] = np.float32(0.0)
        bf16_panel_gemm(nact, H, N2, p0 * 2 * T, p1 * 2 * T, h_in, 0, Hp, R, 0, ws, 0, N2,
                        ip[IP_ORDER])
    else:
        _int8_product(nact, H, N2, p0 * 2 * T, p1 * 2 * T, h_in, 0, Hp, R, rb, ws, 0, N2,
                      qoff)
    for b in range(nact):
        for p in range(p0, p1):
            a = b * N2 + p * 2 * T
            x = xoff[b] + p * 3 * T
            s = b * Hp + p * T
            for jj in range(2 * T):
                ws[a + jj] += xp[x + jj]
            if has_clip:
                act.clip(ws, a, 2 * T, lim)
            act.apply(a_f, fp[FP_ALPHA0], fp[FP_BETA0], ws, a, 2 * T)
            for jj in range(T):
                ws[zoff + s + jj] = ws[a + jj]
                ws[rhoff + s + jj] = ws[a + T + jj] * h_in[s + jj]
    # then (rt (.) Ht-1) . Rh into the product rows (their [z r] part is done)
    j0 = p0 * T
    j1 = p1 * T
    if bf16:
        for b in range(nact):
            for j in range(j0, j1):
                ws[b * N3 + j] = np.float32(0.0)
        bf16_panel_gemm(nact, H, Hp, j0, j1, ws, rhoff, Hp, R, H * N2, ws, 0, N3,
                        ip[IP_ORDER])
    else:
        R2 = int8.wblob_layout(H, N2)[4]
        _int8_product(nact, H, Hp, j0, j1, int8.ptr_add(ws, rhoff), 0, Hp,
                      int8.ptr_add(R, R2), int8.ptr_add(rb, N2), ws, 0, N3, qoff)
    for b in range(nact):
        for p in range(p0, p1):
            j = p * T
            a = b * N3 + j
            x = xoff[b] + p * 3 * T + 2 * T
            s = b * Hp + j
            for jj in range(T):
                ws[a + jj] += xp[x + jj]
            if has_clip:
                act.clip(ws, a, T, lim)
            act.apply(a_g, fp[FP_ALPHA1], fp[FP_BETA1], ws, a, T)
            for jj in range(T):
                z = ws[zoff + s + jj]
                h_out[s + jj] = (_ONE - z) * ws[a + jj] + z * h_in[s + jj]
            write_y(y, yoff[b], h_out, s, j, min(T, H - j))


@cfunc(STEP_SIG, **_jit)
def gru_int8_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    _gru(nact, xp, xoff, R, rb, h_in, h_out, y, yoff, ws, ip, fp, False)


@cfunc(STEP_SIG, **_jit)
def gru_bf16_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    _gru(nact, xp, xoff, R, rb, h_in, h_out, y, yoff, ws, ip, fp, True)
