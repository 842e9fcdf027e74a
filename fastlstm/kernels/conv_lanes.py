"""Convs with few output channels, the output channels across a vector's lanes.

A speech model's first convs (DeepSpeech 2's 1 -> 8 and 8 -> 8 channels,
11 x 5 kernels, stride 2 along both axes or along rows) have too few output
channels for the panel kernel's 16-channel panels and a column stride that
keeps ``conv_rows`` (vectors along an output row) from reading whole input
vectors: it ran them at 10-12 GMAC/s.  Here a vector holds 8 output
channels of one position, so each tap is one weight vector and one input
value broadcast, whatever the strides:

    for each output row, block of 8 channels, group of 8 positions p:
        acc[p] = bias[8 channels]
        for ci, kh, kw (in that order):
            acc[p] = fma(broadcast(x[ci, oh*SH + kh*DH, (ow + p)*SW + kw*DW]),
                         w[8 channels, ci, kh, kw], acc[p])
        act, then the 8 x 8 block transposed and stored as 8 channel rows

(``block_kernel``: the taps of one input channel written out, a loop over
input channels; 8 independent FMA chains, 9 loads per 8 FMAs.)  Each output
is one chain of FMAs from the bias, taps in the order above, so results are
the same for every call and differ from the other kernels' by rounding.

The weights are packed once per node (``pack``, through the node's
``lanes_weights``) as [channel block][CIN][KH][KW][8]; the input is padded
(a copy) when the conv pads or when a last group of 8 positions would read
past the row.
"""
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

from .. import fuse
from . import conv as K
from .common import F32P
from .irvec import VL, V, transpose8

#: the activations a block applies (others run as a separate pass after it)
ACTS = (K.ACT_NONE, K.ACT_RELU, K.ACT_CLIP)
#: most taps of one input channel written out (KH * KW)
MAX_TAPS = 121
#: kernel columns whose weight vectors a block keeps in registers at once (8
#: accumulators + these + an input value: 14 of AVX2's 16)
KW_RUN = 5
_BLOCKS = {}

def block_kernel(KH, KW, SW, DW, act):
    """An intrinsic computing 8 output channels x VL positions of one row::

        block(px, xoff, Wp, DH, plane, CIN, w, woff, b, boff, dst, doff, dstride,
              lo, hi):
        dst[doff + l*dstride + p] = act(b[boff + l] + sum over ci < CIN,
            kh < KH, kw < KW of w[woff + ((ci*KH + kh)*KW + kw)*8 + l] *
            px[xoff + ci*plane + kh*DH*Wp + p*SW + kw*DW])   for l, p < 8

    (act a K.ACT_* code of ``ACTS``; Clip's bounds lo, hi; the column
    stride SW and dilation DW are constants of the kernel)."""
    key = (KH, KW, SW, DW, act)
    got = _BLOCKS.get(key)
    if got is not None:
        return got
    assert act in ACTS and VL == 8

    @intrinsic
    def block(typingctx, px, xoff, Wp, DH, plane, CIN, w, woff, b, boff, dst, doff, dstride,
              lo, hi):
        i64, f32 = types.int64, types.float32
        sig = types.void(F32P, i64, i64, i64, i64, i64, F32P, i64, F32P, i64, F32P, i64, i64,
                         f32, f32)

        def codegen(context, builder, signature, args):
            px, xoff, Wp, DH, plane, CIN, w, woff, b, boff, dst, doff, dstride, lo, hi = args
            v = V(builder, VL)
            mul = builder.mul
            rowstep = mul(DH, Wp)
            accs = [cgutils.alloca_once(builder, v.ty) for _ in range(VL)]
            bias = v.load(b, boff)
            for a in accs:
                builder.store(bias, a)
            with cgutils.for_range(builder, CIN) as loop:
                ci = loop.index
                xb = v.at(xoff, mul(ci, plane))
                wb = v.at(woff, mul(ci, v.int(KH * KW * VL)))
                acc = [builder.load(a) for a in accs]
                for kh in range(KH):
                    xr = v.at(xb, mul(v.int(kh), rowstep))
                    for k0 in range(0, KW, KW_RUN):
                        k1 = min(KW, k0 + KW_RUN)
                        wv = {kw: v.load(w, v.at(wb, (kh * KW + kw) * VL)) for kw in range(k0, k1)}
                        # input columns in order, each loaded once and fed to
                        # the taps that read it: each output's taps stay in
                        # order, and no input value stays live (loaded per tap,
                        # LLVM merged the loads of a column and kept them all
                        # live: registers spilled)
                        for col in range(k0 * DW, (k1 - 1) * DW + (VL - 1) * SW + 1):
                            x = None
                            for p in range(VL):
                                d = col - p * SW
                                if d < 0 or d % DW or not k0 <= d // DW < k1:
                                    continue
                                if x is None:
                                    # (SW and DW constants: one base per input
                                    # row, the rest immediate offsets)
                                    at = v.at(xr, col)
                                    x = v.splat(builder.load(builder.gep(px, [at],
                                                                         inbounds=True)))
                                acc[p] = v.fma(x, wv[d // DW], acc[p])
                for a, x in zip(accs, acc):
                    builder.store(x, a)
            acc = [builder.load(a) for a in accs]
            lov, hiv = v.splat(lo), v.splat(hi)
            acc = [K.ir_act(v, x, act, lov, hiv) for x in acc]
            for l, row in enumerate(transpose8(builder, acc)):
                v.store(row, dst, v.at(doff, mul(v.int(l), dstride)))
            return context.get_dummy_value()

        return sig, codegen
    block.__name__ = f"lanes_block_{KH}x{KW}_{SW}_{DW}_{act}"
    _BLOCKS[key] = block
    return block


def eligible(geo):
    """Whether the Conv of geometry ``geo`` can run here: group 1, 1-D or 2-D,
    output channels a multiple of 8, at most MAX_TAPS taps per input
    channel, at least 8 output positions per row."""
    return (geo[K.G_G] == 1 and geo[K.G_KD] == 1 and geo[K.G_OD] == 1 and geo[K.G_D] == 1
            and geo[K.G_SD] == 1 and geo[K.G_COUT] % VL == 0
            and geo[K.G_KH] * geo[K.G_KW] <= MAX_TAPS and geo[K.G_OW] >= VL)


def source(KH, KW, SW, DW, act):
    """The driver of ``block_kernel(KH, KW, act)`` over a whole conv: output
    rows outer, then channel blocks, then groups of 8 positions (a row's
    last partial group through the buffer ``rb``)."""
    lines = fuse.header("conv, output channels across lanes (fastlstm.kernels.conv_lanes)",
                        "xp, wl, y, N, CIN, COUT, OH, OW, Hp, Wp, SH, DH, lo, hi, rb") + [
        "    px, pw, py, pr = fptr(xp), fptr(wl), fptr(y), fptr(rb)",
        f"    NF = OW // {VL}",
        f"    REM = OW - NF * {VL}",
        "    plane = Hp * Wp",
        "    CB = COUT // 8",
        f"    BIAS = CB * CIN * {KH * KW * VL}",
        "    for n in range(N):",
        "        for oh in range(OH):",
        "            s = (n * CIN * Hp + oh * SH) * Wp",
        "            for cb in range(CB):",
        f"                wo = cb * CIN * {KH * KW * VL}",
        "                o = ((n * COUT + cb * 8) * OH + oh) * OW",
        "                for g in range(NF):",
        f"                    _blk(px, s + g * {VL * SW}, Wp, DH, plane, CIN, pw, wo,",
        "                         pw, BIAS + cb * 8, py, o + g * 8, OH * OW, lo, hi)",
        "                if REM:",
        f"                    _blk(px, s + NF * {VL * SW}, Wp, DH, plane, CIN, pw, wo,",
        "                         pw, BIAS + cb * 8, pr, 0, 8, lo, hi)",
        "                    for l in range(8):",
        "                        for j in range(REM):",
        f"                            py[o + l * OH * OW + NF * {VL} + j] = pr[l * 8 + j]",
    ]
    src = "\n".join(lines) + "\n"
    imports = ("from fastlstm.kernels.conv_lanes import block_kernel\n"
               f"_blk = block_kernel({KH}, {KW}, {SW}, {DW}, {act})\n")
    return src.replace("import math\n", "import math\n" + imports, 1)


def pack(w, nb, cout):
    """(flat weights, bias offset) from ``conv_rows``' layout (W in its ONNX
    layout, its bias at ``nb``): W as [COUT / 8][CIN][KH][KW][8], 8 output
    channels a vector, then the bias."""
    W = w[:nb].reshape(cout // VL, VL, -1).transpose(0, 2, 1)
    flat = np.ascontiguousarray(np.concatenate([W.reshape(-1), w[nb:nb + cout]]), np.float32)
    return flat, W.size


class LanesConv:
    """The conv kernels' call ``(x, w, geo, y)`` for one kernel shape and
    activation; ``w`` packed by ``pack`` (the bias at geo[G_BIAS])."""

    def __init__(self, KH, KW, SW, DW, act):
        self.fn = fuse.compile_kernel(source(KH, KW, SW, DW, act))
        self.KW = KW

    def __call__(self, x, w, geo, y):
        N, CIN, COUT = geo[K.G_N], geo[K.G_CIN], geo[K.G_COUT]
        H, W, OH, OW = geo[K.G_H], geo[K.G_W], geo[K.G_OH], geo[K.G_OW]
        PH, PW = geo[K.G_PH], geo[K.G_PW]
        SH, SW, DH, DW = geo[K.G_SH], geo[K.G_SW], geo[K.G_DH], geo[K.G_DW]
        Hp = H + PH + geo[K.G_QH]
        Wp = W + PW + geo[K.G_QW]
        # the last group of 8 positions reads whole: pad the rows for it
        need = (-(-OW // VL) * VL - 1) * SW + (self.KW - 1) * DW + 1
        if geo[K.G_PADCOPY] or need > Wp:
            Wq = max(Wp, need)
            xp = np.zeros((N * CIN, Hp, Wq), np.float32)
            xp[:, PH:PH + H, PW:PW + W] = x.reshape(N * CIN, H, W)
            xp, Wp = xp.reshape(-1), Wq
        else:
            xp = x
        lo, hi = K.clip_bounds(geo)
        rb = np.empty(VL * VL, np.float32)
        self.fn(xp, w, y, N, CIN, COUT, OH, OW, Hp, Wp, SH, DH, np.float32(lo), np.float32(hi),
                rb)
