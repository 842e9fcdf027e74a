"""Pooling kernels: MaxPool and AveragePool (float32, 1 to 3 spatial axes).

Tensors are seen as in ``fastlstm.kernels.conv``: ``[N*C, D, H, W]`` planes,
flat, the geometry in the same int64 block ``geo`` (its ``G_*`` fields; the
pools read G_N as the number of planes, G_COUNT_PAD as storage_order or
count_include_pad).

Two paths:

- the fast path, for the output columns of an output row whose windows lie
  wholly inside the input (no padding read) when MaxPool's Indices are not
  asked for, at least 8 of them: 8 consecutive outputs at a time in one
  vector register each (up to 4 groups of 8 at once), the taps visited in
  the general path's order (depth, row, column) with the same rule, so that
  results are bit for bit those of the general path, signed zeros and NaN
  included (see the section below).
- the general path, per output: loops over the window's taps, skipping those
  in the padding; it also writes Indices.

CRNN's four MaxPools ([1,32,32,100] 2x2 stride 2 and its successors, 9.6k
to 25.6k outputs each) took 2.2 ms with the general path alone; 74 us with
the fast path against onnxruntime's 97 (fastest rounds, ``python
benchmarks/conv_speed.py --pools``, 10:27 UTC on the shared AVX2 machine).

MaxPool's max takes the first tap, then a tap that is greater or NaN while
the running max is not NaN: NaN propagates (the first NaN is kept), padding
never wins, and of equal values the first in tap order is kept.
AveragePool's divisor counts the taps inside the input, or with
count_include_pad the taps inside the padded input, as onnxruntime does; the
sum starts from +0 and adds the taps in order.
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .conv import _entry, _jit, compiled, G_COUNT_PAD, G_QD, G_QH, G_QW

_F = types.float32[::1]
_L = types.int64[::1]
_SIG_MAXPOOL = types.void(_F, _L, _F, _L)
_SIG_AVGPOOL = types.void(_F, _L, _F)


def kernel(name):
    """Entry point ``name`` of this module, compiled on first use (as the
    conv kernels: ``fastlstm.kernels.conv.compiled``)."""
    return compiled(globals()[name])


@njit(**_jit)
def _inside_run(o_count, s, d, p, k, size):
    """[lo, hi): the outputs along one axis whose windows (stride s, dilation
    d, begin pad p, k taps) read only inside [0, size); hi <= lo when none."""
    lo = -(-p // s)                                 # ceil(p / s)
    hi = (size - 1 + p - (k - 1) * d) // s + 1      # floor division: negative -> none
    if lo > o_count:
        lo = o_count
    if hi > o_count:
        hi = o_count
    if hi < lo:
        hi = lo
    return lo, hi


# ---- the fast path: 8 windows at a time ------------------------------------------
#
# One intrinsic (LLVM IR, as the tiles of ``fastlstm.kernels.conv``) computes
# G groups of 8 consecutive outputs of a row, their windows wholly inside X:
#     acc = -inf (max) or +0 (mean); for every tap in the general path's
#     order (depth, row, column): acc = g(acc, X[base + tap + i*s]), i < 8;
#     dst[doff + i] = acc (/ div)
# with the accumulators in registers.  The max rule from -inf takes the first
# tap as it is (NaN and -inf included), as the general path does.  Stride 1
# is one vector load per tap, stride 2 two loads (floats 0-7 and 7-14: never
# past the last float used) and a shuffle of the even ones, other strides 8
# scalar loads.  A row's last 8 outputs overlap the 8 before (written twice,
# the same values).  Measured on CRNN's four MaxPools (fastest of 2000 calls
# each, summed, on the shared machine): loops that LLVM vectorized itself,
# a pass per tap through a row buffer, 80 us (LLVM runs 32 floats per
# iteration and the rest one at a time, with a mispredicted branch per float
# for the max); this intrinsic with one group of 8, 107 us (each group waits
# on its compare-and-select chain); with up to 4 groups at once, 72 us.

_LANES = 8


def _make_window8(op, kind, G):
    """The intrinsic for g = ``op`` ("max" or "mean"), loads of stride kind
    ``kind`` (1, 2, or 0 for the stride ``s`` given at run time), and G
    groups of 8 outputs at once (independent chains: one alone waits on the
    latency of its compare and select, 13 ns per 8 outputs of a 2x2 max)."""
    @intrinsic
    def window8(typingctx, dst, doff, x, base, s, KD, sd, KH, sh, KW, sw, dv):
        i64 = types.int64
        sig = types.void(dst, i64, x, i64, i64, i64, i64, i64, i64, i64, i64, types.float32)

        def codegen(context, builder, signature, args):
            dst, doff, x, base, s, KD, sd, KH, sh, KW, sw, dv = args
            f32 = ir.FloatType()
            vty = ir.VectorType(f32, _LANES)
            ll64 = ir.IntType(64)
            i32 = ir.IntType(32)
            dp = context.make_array(signature.args[0])(context, builder, dst).data
            xp = context.make_array(signature.args[2])(context, builder, x).data

            def c(v):
                return ir.Constant(ll64, v)

            def vload(off):
                q = builder.bitcast(builder.gep(xp, [off], inbounds=True), vty.as_pointer())
                return builder.load(q, align=4)

            def load(off):
                if kind == 1:
                    return vload(off)
                if kind == 2:
                    lo = vload(off)                             # floats 0..7
                    hi = vload(builder.add(off, c(7)))          # floats 7..14
                    idx = ir.Constant(ir.VectorType(i32, _LANES),
                                      [0, 2, 4, 6, 9, 11, 13, 15])
                    return builder.shuffle_vector(lo, hi, idx)
                v = ir.Constant(vty, ir.Undefined)
                for i in range(_LANES):
                    e = builder.load(builder.gep(
                        xp, [builder.add(off, builder.mul(c(i), s))], inbounds=True))
                    v = builder.insert_element(v, e, ir.Constant(i32, i))
                return v

            # group g's windows start 8*g outputs on: 8*g*s floats
            gstep = builder.mul(c(_LANES), s)
            gbase = [builder.add(base, builder.mul(c(g), gstep)) for g in range(G)]
            accs = [cgutils.alloca_once(builder, vty) for g in range(G)]
            # -inf for the max: the rule then takes the first tap as it is
            # (a NaN, -inf, anything), as the general path does
            init = ir.Constant(vty, [float("-inf") if op == "max" else 0.0] * _LANES)
            for g in range(G):
                builder.store(init, accs[g])
            with cgutils.for_range(builder, KD) as ld:
                od = builder.mul(ld.index, sd)
                with cgutils.for_range(builder, KH) as lh:
                    oh = builder.add(od, builder.mul(lh.index, sh))
                    with cgutils.for_range(builder, KW) as lw:
                        t = builder.add(oh, builder.mul(lw.index, sw))
                        for g in range(G):
                            B = load(builder.add(gbase[g], t))
                            A = builder.load(accs[g])
                            if op == "max":
                                # keep A where it is NaN or B <= A: else B (greater or NaN)
                                keep = builder.or_(builder.fcmp_unordered("uno", A, A),
                                                   builder.fcmp_ordered("<=", B, A))
                                r = builder.select(keep, A, B)
                            else:
                                r = builder.fadd(A, B)
                            builder.store(r, accs[g])
            if op != "max":
                d = builder.insert_element(ir.Constant(vty, ir.Undefined), dv,
                                           ir.Constant(i32, 0))
                d = builder.shuffle_vector(d, ir.Constant(vty, ir.Undefined),
                                           ir.Constant(ir.VectorType(i32, _LANES),
                                                       [0] * _LANES))
            for g in range(G):
                r = builder.load(accs[g])
                if op != "max":
                    r = builder.fdiv(r, d)
                q = builder.bitcast(builder.gep(dp, [builder.add(doff, c(_LANES * g))],
                                                inbounds=True), vty.as_pointer())
                builder.store(r, q, align=4)
            return context.get_dummy_value()

        return sig, codegen
    return window8


_max1, _max2, _max0 = (_make_window8("max", k, 1) for k in (1, 2, 0))
_mean1, _mean2, _mean0 = (_make_window8("mean", k, 1) for k in (1, 2, 0))
_max1x4, _max2x4, _max0x4 = (_make_window8("max", k, 4) for k in (1, 2, 0))
_mean1x4, _mean2x4, _mean0x4 = (_make_window8("mean", k, 4) for k in (1, 2, 0))
_max1x2, _max2x2, _max0x2 = (_make_window8("max", k, 2) for k in (1, 2, 0))
_mean1x2, _mean2x2, _mean0x2 = (_make_window8("mean", k, 2) for k in (1, 2, 0))


def _make_block(max1, max2, max0, mean1, mean2, mean0):
    """One call of the window kernels of one width (4, 2 or 1 vectors of
    outputs), chosen by the op and the column stride (1, 2 or any)."""
    @njit(**dict(_jit, inline="always"))
    def block(is_max, y, d, x, a, SW, KD, sd, KH, sh, KW, sw, div):
        if is_max:
            if SW == 1:
                max1(y, d, x, a, SW, KD, sd, KH, sh, KW, sw, div)
            elif SW == 2:
                max2(y, d, x, a, SW, KD, sd, KH, sh, KW, sw, div)
            else:
                max0(y, d, x, a, SW, KD, sd, KH, sh, KW, sw, div)
        elif SW == 1:
            mean1(y, d, x, a, SW, KD, sd, KH, sh, KW, sw, div)
        elif SW == 2:
            mean2(y, d, x, a, SW, KD, sd, KH, sh, KW, sw, div)
        else:
            mean0(y, d, x, a, SW, KD, sd, KH, sh, KW, sw, div)
    return block


_block4 = _make_block(_max1x4, _max2x4, _max0x4, _mean1x4, _mean2x4, _mean0x4)
_block2 = _make_block(_max1x2, _max2x2, _max0x2, _mean1x2, _mean2x2, _mean0x2)
_block1 = _make_block(_max1, _max2, _max0, _mean1, _mean2, _mean0)


@njit(**_jit)
def _row(x, y, yo, xo, n, geo, is_max, div):
    """y[yo : yo+n] for n >= 8 outputs of one row whose windows lie wholly
    inside X, the first window's first tap at x[xo]."""
    H, W = geo[7], geo[8]
    KD, KH, KW, SW = geo[12], geo[13], geo[14], geo[17]
    sd, sh, sw = geo[18] * H * W, geo[19] * W, geo[20]
    i = 0
    while n - i >= 4 * _LANES:
        _block4(is_max, y, yo + i, x, xo + i * SW, SW, KD, sd, KH, sh, KW, sw, div)
        i += 4 * _LANES
    if n - i >= 2 * _LANES:
        _block2(is_max, y, yo + i, x, xo + i * SW, SW, KD, sd, KH, sh, KW, sw, div)
        i += 2 * _LANES
    while i < n:
        if i > n - _LANES:
            i = n - _LANES
        _block1(is_max, y, yo + i, x, xo + i * SW, SW, KD, sd, KH, sh, KW, sw, div)
        i += _LANES


# ---- the general path: one window ---------------------------------------------------

@njit(**_jit)
def _max_window(x, xb, od, oh, ow, D, H, W, KD, KH, KW, SD, SH, SW, DD, DH, DW,
                PD, PH, PW, colmajor):
    """(max, index within the plane or -1) of one window, skipping padding."""
    best = np.float32(-np.inf)
    bi = -1
    for kd in range(KD):
        iz = od * SD + kd * DD - PD
        if iz < 0 or iz >= D:
            continue
        for kh in range(KH):
            iy = oh * SH + kh * DH - PH
            if iy < 0 or iy >= H:
                continue
            for kw in range(KW):
                ix = ow * SW + kw * DW - PW
                if ix < 0 or ix >= W:
                    continue
                v = x[xb + (iz * H + iy) * W + ix]
                if bi < 0 or (best == best and not v <= best):
                    best = v
                    if colmajor != 0:
                        bi = (ix * H + iy) * D + iz
                    else:
                        bi = (iz * H + iy) * W + ix
    return best, bi


@njit(**_jit)
def _avg_window(x, xb, od, oh, ow, D, H, W, KD, KH, KW, SD, SH, SW, DD, DH, DW,
                PD, PH, PW, QD, QH, QW, incl):
    """The mean of one window (NaN when it counts no tap)."""
    s = np.float32(0)
    cnt = 0
    cpad = 0
    for kd in range(KD):
        iz = od * SD + kd * DD - PD
        if iz < -PD or iz >= D + QD:
            continue
        zin = 0 <= iz < D
        for kh in range(KH):
            iy = oh * SH + kh * DH - PH
            if iy < -PH or iy >= H + QH:
                continue
            yin = zin and 0 <= iy < H
            for kw in range(KW):
                ix = ow * SW + kw * DW - PW
                if ix < -PW or ix >= W + QW:
                    continue
                cpad += 1
                if yin and 0 <= ix < W:
                    s += x[xb + (iz * H + iy) * W + ix]
                    cnt += 1
    div = cpad if incl != 0 else cnt
    return s / np.float32(div) if div > 0 else np.float32(np.nan)


# ---- entry points -------------------------------------------------------------------

@_entry(_SIG_MAXPOOL)
def max_pool(x, geo, y, idx):
    """MaxPool over [N*C] planes (geo[G_N]); Indices into ``idx`` when it is
    not empty (storage order geo[G_COUNT_PAD]: 0 row-major, 1 column-major
    within the plane, as ONNX counts them)."""
    NP_, D, H, W, OD, OH, OW = geo[0], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KD, KH, KW, SD, SH, SW = geo[12], geo[13], geo[14], geo[15], geo[16], geo[17]
    DD, DH, DW, PD, PH, PW = geo[18], geo[19], geo[20], geo[21], geo[22], geo[23]
    colmajor = geo[G_COUNT_PAD]
    want = idx.size > 0
    ispace = D * H * W
    dlo, dhi = _inside_run(OD, SD, DD, PD, KD, D)
    hlo, hhi = _inside_run(OH, SH, DH, PH, KH, H)
    wlo, whi = _inside_run(OW, SW, DW, PW, KW, W)
    if want:        # the Indices: the general path everywhere
        dhi = dlo
    if whi - wlo < _LANES:     # the fast path writes 8 outputs at a time
        whi = wlo
    k = 0
    for p in range(NP_):
        xb = p * ispace
        for od in range(OD):
            for oh in range(OH):
                # the general path on [0, e0) and [e1, OW), the passes between
                e0, e1 = OW, OW
                if dlo <= od < dhi and hlo <= oh < hhi and whi > wlo:
                    xo = xb + ((od * SD - PD) * H + oh * SH - PH) * W + wlo * SW - PW
                    _row(x, y, k + wlo, xo, whi - wlo, geo, True, np.float32(1))
                    e0, e1 = wlo, whi
                ow = 0
                while ow < OW:
                    if ow == e0:
                        ow = e1
                        if ow == OW:
                            break
                    best, bi = _max_window(x, xb, od, oh, ow, D, H, W, KD, KH, KW,
                                           SD, SH, SW, DD, DH, DW, PD, PH, PW, colmajor)
                    y[k + ow] = best
                    if want:
                        idx[k + ow] = xb + bi if bi >= 0 else 0
                    ow += 1
                k += OW


@_entry(_SIG_AVGPOOL)
def avg_pool(x, geo, y):
    """AveragePool over [N*C] planes (count_include_pad: geo[G_COUNT_PAD])."""
    NP_, D, H, W, OD, OH, OW = geo[0], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KD, KH, KW, SD, SH, SW = geo[12], geo[13], geo[14], geo[15], geo[16], geo[17]
    DD, DH, DW, PD, PH, PW = geo[18], geo[19], geo[20], geo[21], geo[22], geo[23]
    QD, QH, QW = geo[G_QD], geo[G_QH], geo[G_QW]
    incl = geo[G_COUNT_PAD]
    ispace = D * H * W
    dlo, dhi = _inside_run(OD, SD, DD, PD, KD, D)
    hlo, hhi = _inside_run(OH, SH, DH, PH, KH, H)
    wlo, whi = _inside_run(OW, SW, DW, PW, KW, W)
    div = np.float32(KD * KH * KW)      # a window inside counts every tap either way
    if whi - wlo < _LANES:
        whi = wlo
    k = 0
    for p in range(NP_):
        xb = p * ispace
        for od in range(OD):
            for oh in range(OH):
                e0, e1 = OW, OW
                if dlo <= od < dhi and hlo <= oh < hhi and whi > wlo:
                    xo = xb + ((od * SD - PD) * H + oh * SH - PH) * W + wlo * SW - PW
                    _row(x, y, k + wlo, xo, whi - wlo, geo, False, div)
                    e0, e1 = wlo, whi
                ow = 0
                while ow < OW:
                    if ow == e0:
                        ow = e1
                        if ow == OW:
                            break
                    y[k + ow] = _avg_window(x, xb, od, oh, ow, D, H, W, KD, KH, KW,
                                            SD, SH, SW, DD, DH, DW, PD, PH, PW,
                                            QD, QH, QW, incl)
                    ow += 1
                k += OW
