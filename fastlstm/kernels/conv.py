"""Convolution kernels (float32, N, C and 1 to 3 spatial axes).

Every kernel sees its tensors as ``[N, C, D, H, W]`` (1-D and 2-D inputs get
leading spatial axes of size 1), flat, and reads the geometry from one int64
array ``geo`` (fields ``G_*`` below): one compiled function serves every
shape, and a call passes four arrays (Numba's dispatch costs per argument).

Conv, the panel kernel (``conv_panel``)
---------------------------------------
    Y[n, m, o] = B[m] + sum_{c, t} W[m, c, t] * X[n, g*Cg + c, o*s + t*d - pad]

is computed per group as a product whose rows are output positions and whose
columns are output channels.  W is packed once at load
(``fastlstm.ops.conv``) into panels of ``NC`` output channels, each
``[kD][kH][kW][Cg][NC]`` (channels beyond the group's zero), then the bias
(zeros when the node has none).  The register tile (``_make_tile``, LLVM IR
as in ``fastlstm.kernels.simd``) keeps up to MRP positions (6 on AVX2, 4
with AVX-512) x NC channels of accumulators in registers for the whole sum:
per (tap, input channel) it loads NV weight vectors and broadcasts one input
element per position, so each weight loaded feeds one FMA per position.
Its three loops (kernel rows, kernel columns, input channels) take any
strides, so X is read in place (no im2col): channels first when the node
does not pad, else from a zero-padded copy made channels last.  The longest
loop runs innermost (the input channels; the kernel columns of a one-channel
STFT).  Taps that read only padding for every position of a tile are
skipped (a 3-tap conv at one position reads a third of its weights).  A tile of one or two positions splits its innermost
sum in 4 or 2 parts with their own accumulators, so that 8 FMA chains hide
the FMA latency; the parts are added when the tile is written, with the bias
and the optional fused activation (Relu, Sigmoid, or Clip with constant
bounds).

Conv, the rows kernel (``conv_rows``) runs convolutions with 4 to 8 output
channels per group, or one input channel, on rows of at least NC output
columns (the speech model's, CRNN's first), W in its ONNX layout: the same
register tile with the roles swapped, 4 or 6 output channels x NC consecutive
output columns, each weight broadcast, the input columns loaded as vectors
from a padded copy whose rows are split in stride phases.

Conv, the direct kernel (``conv_direct``) runs convolutions with few output
channels per group (depthwise, a one-channel head), W in its ONNX layout:
loops over output rows, the innermost along W (vectorized for stride 1).

ConvTranspose (``conv_transpose``) adds each input element times its packed
weight row ``[co]`` into a channels-last accumulator, then writes Y.

The pools are in ``fastlstm.kernels.pool`` (same ``geo`` block).

The float32 sums run in a fixed order for a given shape (results do not
depend on the call), in an order other than onnxruntime's (differences are
rounding: about 1e-7 relative per term).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import config
from .irvec import shuffle, transpose8
from .scalar import sigmoid as _sigmoid     # the fused elementwise Sigmoid's own formula

_jit = dict(nogil=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
            error_model=config.NUMBA_ERROR_MODEL)


def _host_lanes():
    """float32 lanes of the host's widest vector register (16 with AVX-512)."""
    try:
        import llvmlite.binding as ll
        return 16 if ll.get_host_cpu_features().get("avx512f") else 8
    except Exception:   # an unknown host: 8 lanes are right for AVX2 and fine elsewhere
        return 8


#: Lanes per accumulator vector and vectors per tile row: a panel of weights
#: is NC = NV * LANES output channels wide.  With MR <= 4 rows a tile holds
#: 8 accumulator registers (of 16 on AVX2, 32 on AVX-512): enough independent
#: FMA chains to cover the FMA latency without spilling.
LANES = _host_lanes()
NV = 2
NC = NV * LANES
MR = 4
#: positions of the panel kernel's tile on a host without AVX-512: 6 x NC
#: (12 ymm accumulators of 16) where a row has 6 positions left.  Measured
#: against 4 on CRNN's convs 2-4 (fastest of 300 calls, 10:38 UTC): 447 ->
#: 390 us, 279 -> 250, 493 -> 479; at width 200 conv 2 1675 -> 1527
MRP = 6 if LANES < 16 else 4
#: accumulator floats a tile writes (up to 6 rows of NC)
ACC = 6 * NC

# Writable C arrays only: an argument whose type matches the signature exactly
# takes the dispatcher's fast path (a read-only X would be converted on every
# call, ~0.2 us; the caller copies such an X instead).  Scalars cost more to
# pass than arrays, so everything else is in ``geo``.
_F = types.float32[::1]
_L = types.int64[::1]
_SIG_CONV = types.void(_F, _F, _L, _F)


def _entry(sig):
    """An entry point compiled for ``sig`` alone, on first use (``kernel``):
    a model without ConvTranspose does not compile it."""
    def deco(fn):
        d = njit(**_jit)(fn)
        d._fastlstm_sig = sig
        return d
    return deco


def compiled(d):
    """The ``_entry`` dispatcher ``d``, compiled (or loaded from Numba's cache)
    on the first call.  It then takes exactly its signature: other argument
    types are a TypeError rather than a new compilation."""
    if not d.signatures:
        d.compile(d._fastlstm_sig)
        d.disable_compile()
    return d


def kernel(name):
    """Entry point ``name`` of this module, compiled (``compiled``)."""
    return compiled(globals()[name])


# ---- geo: the int64 geometry block every kernel reads -----------------------------
(G_N, G_G, G_CIN, G_CGI, G_COUT, G_CGO,
 G_D, G_H, G_W, G_OD, G_OH, G_OW,
 G_KD, G_KH, G_KW, G_SD, G_SH, G_SW, G_DD, G_DH, G_DW,
 G_PD, G_PH, G_PW, G_QD, G_QH, G_QW,
 G_NP, G_BIAS, G_ACT, G_PADCOPY, G_COUNT_PAD, G_CLIP, G_POOLH, G_POOLW) = range(35)
#: geo[G_ACT]: the activation fused into a Conv's output; ACT_CLIP's bounds are
#: two float32 in the bits of geo[G_CLIP] (``clip_bounds``).  ACT_SILU (x *
#: sigmoid(x), PyTorch's SiLU exported as Sigmoid and Mul) is computed by
#: ``epilogue`` and by the Winograd kernels only (``fastlstm.ops.conv`` runs
#: the other kernels without it, then ``epilogue``).
ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_CLIP, ACT_SILU = 0, 1, 2, 3, 4


def ir_act(v, x, act, lo, hi):
    """The IR vector ``x`` (``irvec.V`` ``v``) with activation ``act`` applied
    where the vector kernels apply it in registers: Relu, or Clip to the
    vectors ``lo`` and ``hi``; ``x`` itself for any other code."""
    if act == ACT_RELU:
        return v.relu(x)
    if act == ACT_CLIP:
        return v.clip(x, lo, hi)
    return x
#: geo[G_POOLH], geo[G_POOLW]: a MaxPool fused after the Conv (and its
#: activation), windows of POOLH x POOLW with the same strides, no padding
#: (0: none); the output is then the pooled one.  Computed by ``epilogue``
#: and by the Winograd kernels.
GEO_SIZE = 35


@njit(**_jit)
def clip_bounds(geo):
    """(lo, hi) of a fused Clip: the two float32 stored in geo[G_CLIP]."""
    b = geo[G_CLIP:G_CLIP + 1].view(np.float32)
    return b[0], b[1]


@njit(**_jit)
def _clip(v, lo, hi):
    """As the Clip op: v < lo ? lo : v, then > hi ? hi : v (NaN v stays NaN;
    a NaN bound leaves v as it is)."""
    v = lo if v < lo else v
    return hi if v > hi else v


@njit(**dict(_jit, inline="always"))
def apply_act(v, ACT, clo, chi):
    """The fused activation ``ACT`` (an ACT_* code) of one value."""
    if ACT == ACT_RELU:
        return np.float32(0) if v < 0 else v
    if ACT == ACT_SIGMOID:
        return _sigmoid(v)
    if ACT == ACT_CLIP:
        return _clip(v, clo, chi)
    if ACT == ACT_SILU:
        return v * _sigmoid(v)
    return v


@njit(**dict(_jit, inline="always"))
def pool_max(a, b):
    """MaxPool's rule for the next tap b after the running max a (as
    ``fastlstm.kernels.pool``): b when a is not NaN and b is greater or NaN,
    else a (NaN propagates, the first NaN is kept, of equal values the first)."""
    return b if (a == a and not b <= a) else a


@_entry(types.void(_F, _L, _F))
def epilogue(t, geo, y):
    """y from t, the Conv's output [N*COUT planes of OH x OW] without its
    activation: the activation geo[G_ACT], then the fused MaxPool
    (geo[G_POOLH] x geo[G_POOLW] windows, when set) into y's [N*COUT planes
    of OH // POOLH x OW // POOLW]."""
    NP_, OH, OW = geo[G_N] * geo[G_COUT], geo[G_OH], geo[G_OW]
    ACT = geo[G_ACT]
    clo, chi = clip_bounds(geo)
    KH, KW = max(geo[G_POOLH], 1), max(geo[G_POOLW], 1)
    PH, PW = OH // KH, OW // KW
    for p in range(NP_):
        src = p * OH * OW
        dst = p * PH * PW
        for ph in range(PH):
            for pw in range(PW):
                o = src + ph * KH * OW + pw * KW
                m = apply_act(t[o], ACT, clo, chi)
                for i in range(KH):
                    for j in range(KW):
                        if i + j > 0:
                            m = pool_max(m, apply_act(t[o + i * OW + j], ACT, clo, chi))
                y[dst + ph * PW + pw] = m


def _make_tile(P, S):
    """A register tile of P output positions x S parts of the innermost sum:

    acc[(s*P + r)*NC + c] (+)= sum_{i1, i2, i3}
        a[aoff + r*lda + s*lda2 + i1*as1 + i2*as2 + i3*as3] *
        w[woff + s*ldw2 + i1*ws1 + i2*ws2 + i3*ws3 + c]        for r < P, s < S, c < NC

    ``accumulate`` = 0 starts from zero.  The P*S*NV accumulator vectors stay
    in registers across the three loops; each weight vector loaded feeds P
    FMAs.  With S > 1 the rows of each part cover a different slice of the
    innermost loop (the caller sums them): independent FMA chains for a tile
    of one or two positions, which would otherwise wait on FMA latency."""
    R = P * S

    @intrinsic
    def tile(typingctx, K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, lda2, w, woff,
             ldw2, acc, accumulate):
        i64 = types.int64
        sig = types.void(i64, i64, i64, i64, i64, i64, i64, i64, i64, a, i64, i64, i64, w, i64,
                         i64, acc, i64)

        def codegen(context, builder, signature, args):
            (K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, lda2, w, woff, ldw2, acc,
             accumulate) = args
            ap = context.make_array(signature.args[9])(context, builder, a).data
            wp = context.make_array(signature.args[13])(context, builder, w).data
            cp = context.make_array(signature.args[16])(context, builder, acc).data
            f32 = ir.FloatType()
            vty = ir.VectorType(f32, LANES)
            ll64 = ir.IntType(64)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]), f"llvm.fma.v{LANES}f32")
            undef = ir.Constant(vty, ir.Undefined)
            zero_v = ir.Constant(vty, [0.0] * LANES)
            zero32 = ir.Constant(ir.IntType(32), 0)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

            def c(v):
                return ir.Constant(ll64, v)

            def vptr(base, off):
                return builder.bitcast(builder.gep(base, [off], inbounds=True),
                                       vty.as_pointer())

            keep = builder.icmp_signed("!=", accumulate, c(0))
            slots = []
            for r in range(R):
                row = []
                for v in range(NV):
                    sl = cgutils.alloca_once(builder, vty)
                    old = builder.load(vptr(cp, c(r * NC + v * LANES)), align=4)
                    builder.store(builder.select(keep, old, zero_v), sl)
                    row.append(sl)
                slots.append(row)
            arow = [builder.add(builder.add(aoff, builder.mul(c(r), lda)),
                                builder.mul(c(p), lda2)) for p in range(S) for r in range(P)]
            wpart = [builder.add(woff, builder.mul(c(p), ldw2)) for p in range(S)]
            with cgutils.for_range(builder, K1) as l1:
                a1 = builder.mul(l1.index, as1)
                w1 = builder.mul(l1.index, ws1)
                with cgutils.for_range(builder, K2) as l2:
                    a2 = builder.add(a1, builder.mul(l2.index, as2))
                    w2 = builder.add(w1, builder.mul(l2.index, ws2))
                    with cgutils.for_range(builder, K3) as l3:
                        a3 = builder.add(a2, builder.mul(l3.index, as3))
                        w3 = builder.add(w2, builder.mul(l3.index, ws3))
                        for p in range(S):
                            wb = builder.add(wpart[p], w3)
                            wv = [builder.load(vptr(wp, builder.add(wb, c(v * LANES))), align=4)
                                  for v in range(NV)]
                            for r in range(P):
                                row = p * P + r
                                av = builder.load(builder.gep(
                                    ap, [builder.add(arow[row], a3)], inbounds=True))
                                bv = builder.shuffle_vector(
                                    builder.insert_element(undef, av, zero32), undef, splat)
                                for v in range(NV):
                                    sl = slots[row][v]
                                    builder.store(builder.call(fma, [bv, wv[v], builder.load(sl)]),
                                                  sl)
            for r in range(R):
                for v in range(NV):
                    builder.store(builder.load(slots[r][v]), vptr(cp, c(r * NC + v * LANES)),
                                  align=4)
            return context.get_dummy_value()

        return sig, codegen
    return tile


#: (positions, parts) of the tiles: 1-4 positions; one position in 4 parts and
#: two in 2 parts, so that every tile has at least 8 independent FMA chains
#: when its innermost loop is long enough to split.
_t1, _t2, _t3, _t4, _t1x4, _t2x2 = (_make_tile(p, s) for p, s in
                                    ((1, 1), (2, 1), (3, 1), (4, 1), (1, 4), (2, 2)))
_t5, _t6 = _make_tile(5, 1), _make_tile(6, 1)
#: the innermost loop is split when it is at least this long
SPLIT_MIN = 16


@njit(**_jit)
def _tile(mr, K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, w, woff, acc, accumulate):
    """Positions [0, mr) of a tile into acc[parts][mr][NC]; returns the
    number of parts to sum."""
    if mr == 6:
        _t6(K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, 0, w, woff, 0, acc,
            accumulate)
    elif mr == 5:
        _t5(K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, 0, w, woff, 0, acc,
            accumulate)
    elif mr == 4:
        _t4(K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, 0, w, woff, 0, acc,
            accumulate)
    elif mr == 3:
        _t3(K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, 0, w, woff, 0, acc,
            accumulate)
    elif K3 >= SPLIT_MIN:
        S = 4 // mr
        q = K3 // S
        if mr == 2:
            _t2x2(K1, as1, ws1, K2, as2, ws2, q, as3, ws3, a, aoff, lda, q * as3, w, woff,
                  q * ws3, acc, accumulate)
        else:
            _t1x4(K1, as1, ws1, K2, as2, ws2, q, as3, ws3, a, aoff, lda, q * as3, w, woff,
                  q * ws3, acc, accumulate)
        rest = K3 - S * q
        if rest > 0:    # the remainder adds into part 0
            if mr == 2:
                _t2(K1, as1, ws1, K2, as2, ws2, rest, as3, ws3, a, aoff + S * q * as3, lda, 0,
                    w, woff + S * q * ws3, 0, acc, 1)
            else:
                _t1(K1, as1, ws1, K2, as2, ws2, rest, as3, ws3, a, aoff + S * q * as3, lda, 0,
                    w, woff + S * q * ws3, 0, acc, 1)
        return S
    elif mr == 2:
        _t2(K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, 0, w, woff, 0, acc,
            accumulate)
    else:
        _t1(K1, as1, ws1, K2, as2, ws2, K3, as3, ws3, a, aoff, lda, 0, w, woff, 0, acc,
            accumulate)
    return 1


@njit(**_jit)
def _tap_range(o, n, s, d, p, k, size):
    """First tap and tap count covering every tap through which one of the
    positions o..o+n-1 (stride s) reads inside [0, size) (dilation d, padding
    p); count 0 when they all read padding.  Position q reads inside through
    taps [ceil((p - q*s) / d), floor((size - 1 + p - q*s) / d)], an interval
    that moves down as q grows, so the union runs from the last position's
    first tap to the first position's last."""
    last = o + n - 1
    lo = -((last * s - p) // d)         # ceil((p - last*s) / d)
    if lo < 0:
        lo = 0
    hi = (size - 1 + p - o * s) // d
    if hi > k - 1:
        hi = k - 1
    if hi < lo:
        return 0, 0
    return lo, hi - lo + 1


def _make_t8(ncols):
    """An intrinsic moving 8 rows of ``ncols`` floats (8 or 4) to ``ncols``
    rows of 8: dst[doff + j*dstride + r] = src[soff + r*sstride + j] for
    r < 8, j < ncols, in registers (8: 8 loads, 24 shuffles, 8 stores; 4: 8
    loads, 16 shuffles, 4 stores)."""
    @intrinsic
    def t8(typingctx, src, soff, sstride, dst, doff, dstride):
        i64 = types.int64
        sig = types.void(src, i64, i64, dst, i64, i64)

        def codegen(context, builder, signature, args):
            src, soff, sstride, dst, doff, dstride = args
            sp = context.make_array(signature.args[0])(context, builder, src).data
            dp = context.make_array(signature.args[3])(context, builder, dst).data
            f32, ll64 = ir.FloatType(), ir.IntType(64)

            def at(base, off, stride, k, n):
                p = builder.gep(base, [builder.add(off, builder.mul(stride, ir.Constant(ll64, k)))],
                                inbounds=True)
                return builder.bitcast(p, ir.VectorType(f32, n).as_pointer())

            r = [builder.load(at(sp, soff, sstride, k, ncols), align=4) for k in range(8)]
            if ncols == 8:
                rows = transpose8(builder, r)
            else:
                def shuf(a, b, idx):
                    return shuffle(builder, a, b, idx)
                # pairs of rows interleaved: [r0[0] r1[0] r0[1] r1[1] ...]
                p = [shuf(r[k], r[k + 1], [0, 4, 1, 5, 2, 6, 3, 7]) for k in range(0, 8, 2)]
                rows = []
                for j in range(4):
                    two = [2 * j, 2 * j + 1, 8 + 2 * j, 9 + 2 * j]
                    rows.append(shuf(shuf(p[0], p[1], two), shuf(p[2], p[3], two),
                                     list(range(8))))
            for j, row in enumerate(rows):
                builder.store(row, at(dp, doff, dstride, j, 8), align=4)
            return context.get_dummy_value()

        return sig, codegen
    t8.__name__ = f"t8x{ncols}"
    return t8


_t8x8, _t8x4 = _make_t8(8), _make_t8(4)


@njit(**_jit)
def _pad_copy_nhwc(x, xoff, C, D, H, W, pd, ph, pw, Dp, Hp, Wp, dst, Cs):
    """dst[Dp, Hp, Wp, Cs] = X[xoff: C*D*H*W] (channels first) moved channels
    last (Cs >= C floats per position, the channels past C zeros) and placed
    at (pd, ph, pw), zeros around.  Blocks of 8 channels x 8 columns are
    transposed in registers (``_t8x8``), then a block of 4 columns
    (``_t8x4``); the channels and columns left over a float at a time.
    (Element by element, the whole copy was scalar: 50 us of the 330 of the
    CRNN's 32 -> 64 channel conv on 16 x 50, and 200 of 1440 on 16 x 200,
    measured by taking the Winograd kernel's stages out.)"""
    for i in range(Dp * Hp * Wp * Cs):
        dst[i] = 0
    cs = D * H * W
    C8, W8 = C // 8 * 8, W // 8 * 8
    W4 = W8 + 4 if W - W8 >= 4 else W8
    for z in range(D):
        for y in range(H):
            d0 = (((z + pd) * Hp + y + ph) * Wp + pw) * Cs
            s0 = xoff + (z * H + y) * W
            for ch in range(0, C8, 8):
                for i in range(0, W8, 8):
                    _t8x8(x, s0 + ch * cs + i, cs, dst, d0 + i * Cs + ch, Cs)
                if W4 > W8:
                    _t8x4(x, s0 + ch * cs + W8, cs, dst, d0 + W8 * Cs + ch, Cs)
                for i in range(W4, W):
                    for k in range(8):
                        dst[d0 + i * Cs + ch + k] = x[s0 + (ch + k) * cs + i]
            for ch in range(C8, C):
                for i in range(W):
                    dst[d0 + i * Cs + ch] = x[s0 + ch * cs + i]


@njit(**_jit)
def _pad_copy(x, xoff, C, D, H, W, pd, ph, pw, Dp, Hp, Wp, dst):
    """dst[C, Dp, Hp, Wp] = X[xoff: C*D*H*W] placed at (pd, ph, pw), zeros around."""
    dst[:C * Dp * Hp * Wp] = 0
    for ch in range(C):
        for z in range(D):
            for y in range(H):
                src = xoff + ((ch * D + z) * H + y) * W
                dstart = ((ch * Dp + z + pd) * Hp + y + ph) * Wp + pw
                for i in range(W):
                    dst[dstart + i] = x[src + i]


@_entry(_SIG_CONV)
def conv_panel(x, w, geo, y):
    """Conv with W packed in panels (see the module docstring): y[N*COUT*OD*OH*OW]
    from x[N*CIN*D*H*W] (flat, C order).  A scratch buffer holds the padded
    input copy (when geo[G_PADCOPY]), then a tile's accumulators."""
    N, G, CIN, CGI, COUT, CGO = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]
    D, H, W, OD, OH, OW = geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KD, KH, KW, SD, SH, SW = geo[12], geo[13], geo[14], geo[15], geo[16], geo[17]
    DD, DH, DW, PD, PH, PW = geo[18], geo[19], geo[20], geo[21], geo[22], geo[23]
    NP, BIAS, ACT, PADCOPY = geo[G_NP], geo[G_BIAS], geo[G_ACT], geo[G_PADCOPY]
    clo, chi = clip_bounds(geo)
    if PADCOPY != 0:
        Dp, Hp, Wp = D + PD + geo[G_QD], H + PH + geo[G_QH], W + PW + geo[G_QW]
    else:
        Dp, Hp, Wp = D, H, W
    plane = Dp * Hp * Wp
    acc_off = CIN * plane if PADCOPY != 0 else 0
    scratch = np.empty(acc_off + ACC, np.float32)
    acc = scratch[acc_off:]
    taps = KD * KH * KW
    ospace = OD * OH * OW
    # element strides of a channel, column, row and depth step: X itself when
    # the node does not pad, else its padded copy, channels last (no per-row
    # loop over a few columns; a tile's broadcasts read consecutive floats)
    if PADCOPY != 0:
        sc, sw, sh, sd = 1, CIN, Wp * CIN, Hp * Wp * CIN
    else:
        sc, sw, sh, sd = plane, 1, Wp, Hp * Wp
    for n in range(N):
        if PADCOPY != 0:
            _pad_copy_nhwc(x, n * CIN * D * H * W, CIN, D, H, W, PD, PH, PW, Dp, Hp, Wp,
                           scratch, CIN)
            src = scratch
            sbase = 0
        else:
            src = x
            sbase = n * CIN * plane
        for g in range(G):
            gbase = sbase + g * CGI * sc
            for p in range(NP):
                wbase = (g * NP + p) * CGI * taps * NC
                c0 = p * NC
                nvalid = min(NC, CGO - c0)
                ybase = (n * COUT + g * CGO + c0) * ospace
                for od in range(OD):
                    kd0, nkd = _tap_range(od, 1, SD, DD, PD, KD, D)
                    for oh in range(OH):
                        kh0, nkh = _tap_range(oh, 1, SH, DH, PH, KH, H)
                        ow = 0
                        while ow < OW:
                            mr = min(MRP, OW - ow)
                            kw0, nkw = _tap_range(ow, mr, SW, DW, PW, KW, W)
                            # padded coordinates (the padded copy starts with the pads;
                            # without a copy the pads are 0)
                            a0 = gbase + (od * SD + kd0 * DD) * sd + \
                                (oh * SH + kh0 * DH) * sh + (ow * SW + kw0 * DW) * sw
                            parts = 1
                            if nkd == 0 or nkh == 0 or nkw == 0:
                                acc[:] = 0
                            else:
                                for t in range(nkd):
                                    at = a0 + t * DD * sd
                                    wt = wbase + ((kd0 + t) * KH * KW + kh0 * KW + kw0) * CGI * NC
                                    # the longest loop innermost: input channels, or the
                                    # kernel columns when there are few channels (an STFT)
                                    if CGI >= nkw:
                                        parts = _tile(mr, nkh, DH * sh, KW * CGI * NC,
                                                      nkw, DW * sw, CGI * NC, CGI, sc, NC,
                                                      src, at, SW * sw, w, wt, acc, t)
                                    else:
                                        parts = _tile(mr, nkh, DH * sh, KW * CGI * NC,
                                                      CGI, sc, NC, nkw, DW * sw, CGI * NC,
                                                      src, at, SW * sw, w, wt, acc, t)
                            # sum the parts, add the bias (always packed, zeros when the
                            # node has none), the fused activation; Y is channels first, so a
                            # tile row is written with a stride of OD*OH*OW
                            obase = ybase + (od * OH + oh) * OW + ow
                            bb = BIAS + g * CGO + c0
                            for r in range(mr):
                                ar = r * NC
                                for q in range(1, parts):
                                    aq = (q * mr + r) * NC
                                    for cc in range(NC):
                                        acc[ar + cc] += acc[aq + cc]
                                o = obase + r
                                if ACT == ACT_RELU:
                                    for cc in range(nvalid):
                                        v = acc[ar + cc] + w[bb + cc]
                                        y[o + cc * ospace] = np.float32(0) if v < 0 else v
                                elif ACT == ACT_SIGMOID:
                                    for cc in range(nvalid):
                                        y[o + cc * ospace] = _sigmoid(acc[ar + cc] + w[bb + cc])
                                elif ACT == ACT_CLIP:
                                    for cc in range(nvalid):
                                        y[o + cc * ospace] = _clip(acc[ar + cc] + w[bb + cc],
                                                                   clo, chi)
                                else:
                                    for cc in range(nvalid):
                                        y[o + cc * ospace] = acc[ar + cc] + w[bb + cc]
                            ow += mr


@_entry(_SIG_CONV)
def conv_direct(x, w, geo, y):
    """Conv with W in its ONNX layout ``[COUT, CGI, KD, KH, KW]`` (bias after
    it at geo[G_BIAS]); for few output channels per group (depthwise, a
    one-channel head).  The innermost loop runs along output columns."""
    N, CIN, CGI, COUT, CGO = geo[0], geo[2], geo[3], geo[4], geo[5]
    D, H, W, OD, OH, OW = geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KD, KH, KW, SD, SH, SW = geo[12], geo[13], geo[14], geo[15], geo[16], geo[17]
    DD, DH, DW, PD, PH, PW = geo[18], geo[19], geo[20], geo[21], geo[22], geo[23]
    BIAS, ACT, PADCOPY = geo[G_BIAS], geo[G_ACT], geo[G_PADCOPY]
    if PADCOPY != 0:
        Dp, Hp, Wp = D + PD + geo[G_QD], H + PH + geo[G_QH], W + PW + geo[G_QW]
    else:
        Dp, Hp, Wp = D, H, W
    plane = Dp * Hp * Wp
    ospace = OD * OH * OW
    taps = KD * KH * KW
    scratch = np.empty(CIN * plane if PADCOPY != 0 else 1, np.float32)
    for n in range(N):
        if PADCOPY != 0:
            _pad_copy(x, n * CIN * D * H * W, CIN, D, H, W, PD, PH, PW, Dp, Hp, Wp, scratch)
            src = scratch
            sbase = 0
        else:
            src = x
            sbase = n * CIN * plane
        for co in range(COUT):
            g = co // CGO
            ybase = (n * COUT + co) * ospace
            b = w[BIAS + co] if BIAS >= 0 else np.float32(0)
            for i in range(ospace):
                y[ybase + i] = b
            for ci in range(CGI):
                cbase = sbase + (g * CGI + ci) * plane
                for kd in range(KD):
                    for kh in range(KH):
                        for kw in range(KW):
                            wv = w[(co * CGI + ci) * taps + (kd * KH + kh) * KW + kw]
                            for od in range(OD):
                                zd = od * SD + kd * DD - (0 if PADCOPY != 0 else PD)
                                for oh in range(OH):
                                    zh = oh * SH + kh * DH - (0 if PADCOPY != 0 else PH)
                                    a0 = cbase + (zd * Hp + zh) * Wp + kw * DW - \
                                        (0 if PADCOPY != 0 else PW)
                                    o0 = ybase + (od * OH + oh) * OW
                                    # views: LLVM vectorizes a loop over a view's
                                    # range index, not one over base + index
                                    yv = y[o0:o0 + OW]
                                    if SW == 1:
                                        sv = src[a0:a0 + OW]
                                        for ow in range(OW):
                                            yv[ow] += wv * sv[ow]
                                    else:
                                        for ow in range(OW):
                                            yv[ow] += wv * src[a0 + ow * SW]
            if ACT == ACT_RELU:
                for i in range(ospace):
                    if y[ybase + i] < 0:
                        y[ybase + i] = np.float32(0)
            elif ACT == ACT_SIGMOID:
                for i in range(ospace):
                    y[ybase + i] = _sigmoid(y[ybase + i])
            elif ACT == ACT_CLIP:
                clo, chi = clip_bounds(geo)
                for i in range(ospace):
                    y[ybase + i] = _clip(y[ybase + i], clo, chi)


@intrinsic
def _store_nc(typingctx, y, yoff, acc, aoff, b, act, lo, hi):
    """y[yoff + c] = act(acc[aoff + c] + b) for c < NC, in vectors: act a
    kernels.conv.ACT_* code other than Sigmoid (the caller's scalar loop)."""
    f32, i64 = types.float32, types.int64
    sig = types.void(y, i64, acc, i64, f32, i64, f32, f32)

    def codegen(context, builder, signature, args):
        y, yoff, acc, aoff, b, act, lo, hi = args
        yp = context.make_array(signature.args[0])(context, builder, y).data
        ap = context.make_array(signature.args[2])(context, builder, acc).data
        vty = ir.VectorType(ir.FloatType(), LANES)
        i32 = ir.IntType(32)
        ll64 = ir.IntType(64)

        def splat(v):
            e = builder.insert_element(ir.Constant(vty, ir.Undefined), v, ir.Constant(i32, 0))
            return builder.shuffle_vector(e, ir.Constant(vty, ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))

        bv, lov, hiv = splat(b), splat(lo), splat(hi)
        zero = ir.Constant(vty, [0.0] * LANES)
        is_relu = builder.icmp_signed("==", act, ir.Constant(ll64, ACT_RELU))
        is_clip = builder.icmp_signed("==", act, ir.Constant(ll64, ACT_CLIP))
        for v in range(NV):
            off = ir.Constant(ll64, v * LANES)
            src = builder.bitcast(builder.gep(ap, [builder.add(aoff, off)], inbounds=True),
                                  vty.as_pointer())
            r = builder.fadd(builder.load(src, align=4), bv)
            # Relu: v < 0 ? 0 : v; Clip: v < lo ? lo : v, then > hi ? hi : v
            relu = builder.select(builder.fcmp_ordered("<", r, zero), zero, r)
            c1 = builder.select(builder.fcmp_ordered("<", r, lov), lov, r)
            clip = builder.select(builder.fcmp_ordered(">", c1, hiv), hiv, c1)
            r = builder.select(is_relu, relu, builder.select(is_clip, clip, r))
            dst = builder.bitcast(builder.gep(yp, [builder.add(yoff, off)], inbounds=True),
                                  vty.as_pointer())
            builder.store(r, dst, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(**_jit)
def _phase_copy(x, xoff, C, D, H, W, pd, ph, pw, Dp, Hp, S, Wq, dst):
    """dst[C, Dp, Hp, S, Wq]: X[xoff: C*D*H*W] placed at (pd, ph, pw) in a
    zero-padded copy whose rows are split in S phases: dst[c, z, r, q, j] =
    padded X[c, z, r, j*S + q] (S = 1: a plain padded copy)."""
    RW = S * Wq
    dst[:C * Dp * Hp * RW] = 0
    for ch in range(C):
        for z in range(D):
            for r in range(H):
                src = xoff + ((ch * D + z) * H + r) * W
                row = ((ch * Dp + z + pd) * Hp + r + ph) * RW
                if S == 1:
                    dv = dst[row + pw:row + pw + W]
                    sv = x[src:src + W]
                    for i in range(W):
                        dv[i] = sv[i]
                else:
                    # phase q holds padded columns j*S + q, X's columns j*S + q - pw
                    # (a loop per phase: no division per float, which cost the
                    # speech model's first conv ~100 us)
                    for q in range(S):
                        j0 = (pw - q + S - 1) // S if pw > q else 0
                        j1 = (W - 1 + pw - q) // S + 1
                        if j1 <= j0:
                            continue
                        dv = dst[row + q * Wq + j0:row + q * Wq + j1]
                        s0 = src + j0 * S + q - pw
                        for j in range(j1 - j0):
                            dv[j] = x[s0 + j * S]


@_entry(_SIG_CONV)
def conv_rows(x, w, geo, y):
    """Conv with W in its ONNX layout ``[COUT, CGI, KD, KH, KW]`` (bias after
    it at geo[G_BIAS]), vectors along the output columns: a tile (``_tile``
    with the roles swapped) keeps 4 output channels x NC consecutive output
    columns of one output row in registers (6 channels where 6 or 10 or more
    are left: CRNN's first conv 147 -> 123 us); per tap it broadcasts one weight
    per channel and loads the NC input columns the tile reads through that
    tap.  Those are consecutive in a padded copy of X whose rows are split
    in SW phases (phase q holds columns q, q + SW, ...), so the taps of one
    phase are one of the tile's loops (kernel columns q, q + SW, ...; unit
    dilation when SW > 1).  For convs with few output channels (the panel
    kernel's 16-channel panels would be half empty) or one input channel
    (a tap count too short for the panel tile), on rows of many columns.
    Y is written a row of NC columns at a time, contiguous."""
    N, G, CIN, CGI, COUT, CGO = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]
    D, H, W, OD, OH, OW = geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KD, KH, KW, SD, SH, SW = geo[12], geo[13], geo[14], geo[15], geo[16], geo[17]
    DD, DH, DW, PD, PH, PW = geo[18], geo[19], geo[20], geo[21], geo[22], geo[23]
    BIAS, ACT = geo[G_BIAS], geo[G_ACT]
    clo, chi = clip_bounds(geo)
    Dp, Hp, Wp = D + PD + geo[G_QD], H + PH + geo[G_QH], W + PW + geo[G_QW]
    Wq = -(-Wp // SW)
    RW = SW * Wq                # floats per padded row (its SW phases)
    cs = Dp * Hp * RW           # per channel
    taps = KD * KH * KW
    ospace = OD * OH * OW
    # the tile reads up to NC columns past a row's last output (lanes not
    # stored): slack after the copy keeps those reads inside the buffer
    scratch = np.empty(CIN * cs + NC + KW * DW + ACC, np.float32)
    acc = scratch[CIN * cs + NC + KW * DW:]
    nph = SW if SW < KW else KW     # phases that hold taps (unit dilation when SW > 1)
    if SW == 1:
        nph = 1
    for n in range(N):
        _phase_copy(x, n * CIN * D * H * W, CIN, D, H, W, PD, PH, PW, Dp, Hp, SW, Wq,
                    scratch)
        for g in range(G):
            c0 = 0
            while c0 < CGO:
                # 6 channels where 6 or 10+ are left (12 accumulators), else 4
                rem = CGO - c0
                mr = MRP if rem >= 10 or rem == MRP else min(MR, rem)
                co0 = g * CGO + c0
                for od in range(OD):
                    for oh in range(OH):
                        ybase = ((n * COUT + co0) * OD + od) * OH * OW + oh * OW
                        for ow0 in range(0, OW, NC):
                            nv = min(NC, OW - ow0)
                            parts = 1
                            first = 1
                            for kd in range(KD):
                                rbase = ((g * CGI * Dp + od * SD + kd * DD) * Hp + oh * SH) * RW
                                for q in range(nph):
                                    if SW == 1:
                                        nk, ws2, as2 = KW, DW, 1
                                    else:
                                        nk, ws2, as2 = (KW - q + SW - 1) // SW, 1, SW
                                    # the longest of the three loops innermost (a
                                    # loop of one or two trips there costs more
                                    # than its FMAs: 8 us -> see --rows)
                                    l1, l2, l3 = (KH, KW, DH * RW), (nk, as2, ws2), \
                                        (CGI, taps, cs)
                                    if l1[0] > l3[0]:
                                        l1, l3 = l3, l1
                                    if l2[0] > l3[0]:
                                        l2, l3 = l3, l2
                                    parts = _tile(mr, l1[0], l1[1], l1[2], l2[0], l2[1], l2[2],
                                                  l3[0], l3[1], l3[2], w,
                                                  (co0 * CGI * KD + kd) * KH * KW + q,
                                                  CGI * taps, scratch,
                                                  rbase + q * Wq + ow0, acc, 1 - first)
                                    first = 0
                            for r in range(mr):
                                ar = r * NC
                                for p in range(1, parts):
                                    aq = (p * mr + r) * NC
                                    for cc in range(NC):
                                        acc[ar + cc] += acc[aq + cc]
                                b = w[BIAS + co0 + r]
                                o = ybase + r * ospace + ow0
                                if nv == NC and ACT != ACT_SIGMOID:
                                    _store_nc(y, o, acc, ar, b, ACT, clo, chi)
                                    continue
                                yv = y[o:o + nv]
                                av = acc[ar:ar + nv]
                                if ACT == ACT_RELU:
                                    for cc in range(nv):
                                        v = av[cc] + b
                                        yv[cc] = np.float32(0) if v < 0 else v
                                elif ACT == ACT_SIGMOID:
                                    for cc in range(nv):
                                        yv[cc] = _sigmoid(av[cc] + b)
                                elif ACT == ACT_CLIP:
                                    for cc in range(nv):
                                        yv[cc] = _clip(av[cc] + b, clo, chi)
                                else:
                                    for cc in range(nv):
                                        yv[cc] = av[cc] + b
                c0 += mr


@_entry(_SIG_CONV)
def conv_transpose(x, w, geo, y):
    """ConvTranspose with W packed as ``[G][CGI][KD][KH][KW][CGO]`` (bias after
    it at geo[G_BIAS]).  Here D/H/W are the input's sizes, OD/OH/OW the
    output's, PD/PH/PW the begin pads.  An accumulator holds one batch item's
    output channels last, where each input element adds its weight row."""
    N, G, CIN, CGI, COUT, CGO = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]
    D, H, W, OD, OH, OW = geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KD, KH, KW, SD, SH, SW = geo[12], geo[13], geo[14], geo[15], geo[16], geo[17]
    DD, DH, DW, PD, PH, PW = geo[18], geo[19], geo[20], geo[21], geo[22], geo[23]
    BIAS, ACT = geo[G_BIAS], geo[G_ACT]
    clo, chi = clip_bounds(geo)
    ispace = D * H * W
    ospace = OD * OH * OW
    taps = KD * KH * KW
    acc = np.empty(ospace * CGO, np.float32)
    for n in range(N):
        for g in range(G):
            acc[:] = 0
            for ci in range(CGI):
                xbase = (n * CIN + g * CGI + ci) * ispace
                wci = (g * CGI + ci) * taps
                for iz in range(D):
                    for iy in range(H):
                        for ix in range(W):
                            xv = x[xbase + (iz * H + iy) * W + ix]
                            for kd in range(KD):
                                oz = iz * SD + kd * DD - PD
                                if oz < 0 or oz >= OD:
                                    continue
                                for kh in range(KH):
                                    oy = iy * SH + kh * DH - PH
                                    if oy < 0 or oy >= OH:
                                        continue
                                    for kw in range(KW):
                                        ox = ix * SW + kw * DW - PW
                                        if ox < 0 or ox >= OW:
                                            continue
                                        a0 = ((oz * OH + oy) * OW + ox) * CGO
                                        w0 = (wci + (kd * KH + kh) * KW + kw) * CGO
                                        av = acc[a0:a0 + CGO]       # views: vectorized
                                        wv = w[w0:w0 + CGO]
                                        for co in range(CGO):
                                            av[co] += xv * wv[co]
            for co in range(CGO):
                c = g * CGO + co
                b = w[BIAS + c] if BIAS >= 0 else np.float32(0)
                ybase = (n * COUT + c) * ospace
                for i in range(ospace):
                    v = acc[i * CGO + co] + b
                    if ACT == ACT_RELU and v < 0:
                        v = np.float32(0)
                    elif ACT == ACT_SIGMOID:
                        v = _sigmoid(v)
                    elif ACT == ACT_CLIP:
                        v = _clip(v, clo, chi)
                    y[ybase + i] = v


# ---- Conv through the packed panel GEMM (``fastlstm.kernels.gemm``) ---------------
#
# For group == 1 the convolution is the product
#     Y^T[rows, COUT] = A[rows, K] @ Wt[K, COUT],  K = taps * CIN,
# rows = (n, od, oh, ow), A the im2col matrix whose columns run taps outer,
# input channels inner: A[row, ((kd*KH + kh)*KW + kw)*CIN + c].  Wt is packed
# once at load (``fastlstm.ops.conv``) in the 64-column panels of
# ``fastlstm.pack.to_panels``, COUT zero-padded to a multiple of 16, then the
# bias.  The register tiles of ``kernels.simd`` (4 rows x 64 columns in 16
# vector registers) do the sums; rows are built per chunk of GEMM_ROWS into a
# scratch buffer (per call, so threads never share it) sized to stay in L2
# with the weights.  A one-channel 1-D conv that reads no padding (an STFT:
# overlapping windows of X) is read in place, row r at X + r*stride.  The
# output tile is written transposed into Y (channels first) with the bias and
# the fused activation.

from .gemm import _tile as _gemm_tile       # noqa: E402
from .simd import PANEL as _GPANEL          # noqa: E402

#: floats of im2col rows a chunk holds (64 KB: in L2 beside the output chunk and the
#: weights of a 512 KB L2; 16384 measured 28 GMAC/s on the STFT at batch 293, 65536 24)
GEMM_CHUNK = 16384
#: rows of a chunk at most
GEMM_ROWS = 256


from .common import fptr as _fptr    # noqa: E402


@njit(**_jit)
def gemm_inplace(geo):
    """Whether ``conv_gemm`` reads X in place (one channel, 1-D, no padding
    read, unit dilation; one row of output, or rows long enough that the tiles
    of a row are mostly full: else rows are copied, so that tiles run across
    batch items)."""
    CIN, W, OW, KD, KH, KW = geo[2], geo[8], geo[11], geo[12], geo[13], geo[14]
    SW, DW, PD, PH, PW = geo[17], geo[20], geo[21], geo[22], geo[23]
    N, OD, OH = geo[0], geo[9], geo[10]
    return (CIN == 1 and KD == 1 and KH == 1 and DW == 1 and PD == 0 and PH == 0 and
            PW == 0 and (OW - 1) * SW + KW <= W and (N * OD * OH == 1 or OW >= 24))


#: The register tile on a host without AVX-512: ``kernels.simd``'s tiles are
#: 16 floats per vector, which AVX2 splits in two ymm registers; its widest
#: tile (4 x 64) then needs 32 of the 16 registers and spills, and even its
#: 4 x 16 strip measured 19-20 GMAC/s here against 29-33 for this module's
#: own 4-position tile and 35-38 for a 6-position one (12 ymm accumulators),
#: on the same panels (1176 x 256 @ 256 x 272, 1176 x 387 @ 387 x 128, one
#: thread, Zen 3/4 without AVX-512).  So there the panels are read 16 columns at
#: a time by ``_t6`` (then ``_tile`` for the last rows); with AVX-512 by the
#: panel GEMM's own tiles, 4 rows x a whole panel.
GEMM_STRIPS = LANES < 16


@njit(**_jit)
def _gemm_panels(mb, K, Np, a, aoff, lda, w, o, acc):
    """o[mb, Np] = a[mb rows lda apart from aoff, K] @ Wt[K, Np] (panels at the
    start of w); ``acc`` is a tile's scratch (6*NC floats)."""
    if not GEMM_STRIPS:
        o[:mb * Np] = 0
        ap, wp, op = _fptr(a), _fptr(w), _fptr(o)
    for p in range((Np + _GPANEL - 1) // _GPANEL):
        n0 = p * _GPANEL
        width = min(_GPANEL, Np - n0)
        nv = width // 16
        if GEMM_STRIPS:
            for v in range(nv):
                c0 = n0 + 16 * v
                wo = n0 * K + 16 * v
                m = 0
                while m < mb:
                    mr = 6 if mb - m >= 6 else min(4, mb - m)
                    parts = 1
                    if mr == 6:
                        _t6(1, 0, 0, 1, 0, 0, K, 1, width, a, aoff + m * lda, lda, 0, w, wo, 0,
                            acc, 0)
                    else:
                        parts = _tile(mr, 1, 0, 0, 1, 0, 0, K, 1, width, a, aoff + m * lda, lda,
                                      w, wo, acc, 0)
                    for r in range(mr):
                        ob = (m + r) * Np + c0
                        for cc in range(16):
                            o[ob + cc] = acc[r * NC + cc]
                        for q in range(1, parts):
                            aq = (q * mr + r) * NC
                            for cc in range(16):
                                o[ob + cc] += acc[aq + cc]
                    m += mr
        else:
            m = 0
            while m < mb:
                mr = min(4, mb - m)
                _gemm_tile(mr, nv, K, ap, aoff + m * lda, lda, wp, n0 * K, width, op,
                           m * Np + n0, Np)
                m += 4


@njit(**_jit)
def _gemm_store(o, mb, Np, COUT, ospace, yrow, w, BIAS, ACT, clo, chi, y):
    """y[yrow[r] + c*ospace] = act(o[r, c] + bias[c]) for r < mb, c < COUT."""
    if ospace == 1 and ACT != ACT_SIGMOID:
        # one output position per item (Silero's last encoder conv): a row of
        # o is a run of Y, a loop LLVM vectorizes
        for r in range(mb):
            yo, oo = yrow[r], r * Np
            for c in range(COUT):
                y[yo + c] = apply_act(o[oo + c] + w[BIAS + c], ACT, clo, chi)
        return
    for c in range(COUT):
        b = w[BIAS + c]
        yo = c * ospace
        if ACT == ACT_RELU:
            for r in range(mb):
                v = o[r * Np + c] + b
                y[yrow[r] + yo] = np.float32(0) if v < 0 else v
        elif ACT == ACT_SIGMOID:
            for r in range(mb):
                y[yrow[r] + yo] = _sigmoid(o[r * Np + c] + b)
        elif ACT == ACT_CLIP:
            for r in range(mb):
                y[yrow[r] + yo] = _clip(o[r * Np + c] + b, clo, chi)
        else:
            for r in range(mb):
                y[yrow[r] + yo] = o[r * Np + c] + b


@_entry(_SIG_CONV)
def conv_gemm(x, w, geo, y):
    """Conv (group 1) as a product against Wt packed in panels (see above)."""
    clo, chi = clip_bounds(geo)
    N, CIN, COUT = geo[0], geo[2], geo[4]
    D, H, W, OD, OH, OW = geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    KD, KH, KW, SD, SH, SW = geo[12], geo[13], geo[14], geo[15], geo[16], geo[17]
    DD, DH, DW, PD, PH, PW = geo[18], geo[19], geo[20], geo[21], geo[22], geo[23]
    BIAS, ACT = geo[G_BIAS], geo[G_ACT]
    taps = KD * KH * KW
    K = taps * CIN
    Np = (COUT + 15) // 16 * 16
    ospace = OD * OH * OW
    plane = D * H * W
    acc = np.empty(6 * NC, np.float32)
    if gemm_inplace(geo):
        MB = min(GEMM_ROWS, OW)
        o = np.empty(MB * Np, np.float32)
        yrow = np.empty(MB, np.int64)
        for n in range(N):
            for od in range(OD):
                for oh in range(OH):
                    a0 = n * plane + (od * SD * H + oh * SH) * W
                    pos0 = (od * OH + oh) * OW
                    ow0 = 0
                    while ow0 < OW:
                        mb = min(MB, OW - ow0)
                        _gemm_panels(mb, K, Np, x, a0 + ow0 * SW, SW, w, o, acc)
                        for r in range(mb):
                            yrow[r] = n * COUT * ospace + pos0 + ow0 + r
                        _gemm_store(o, mb, Np, COUT, ospace, yrow, w, BIAS, ACT, clo, chi, y)
                        ow0 += mb
        return
    M = N * ospace
    MB = GEMM_CHUNK // K // 12 * 12
    if MB < 12:
        MB = 12
    if MB > GEMM_ROWS:
        MB = GEMM_ROWS
    if MB > M:
        MB = M
    Dp, Hp, Wp = D + PD + geo[G_QD], H + PH + geo[G_QH], W + PW + geo[G_QW]
    xt = np.empty(CIN * Dp * Hp * Wp, np.float32)
    cur = -1
    run = KW * CIN
    a = np.empty(MB * K, np.float32)
    o = np.empty(MB * Np, np.float32)
    yrow = np.empty(MB, np.int64)
    m0 = 0
    while m0 < M:
        mb = min(MB, M - m0)
        # im2col rows m0 .. m0+mb-1: taps outer, channels inner, copied from a
        # zero-padded channels-last copy of the row's batch item (made once per
        # item: rows run in order), a run of KW*CIN floats per (kd, kh) tap
        for r in range(mb):
            m = m0 + r
            n = m // ospace
            pos = m - n * ospace
            od = pos // (OH * OW)
            oh = (pos // OW) % OH
            ow = pos % OW
            yrow[r] = n * COUT * ospace + pos
            if n != cur:
                _pad_copy_nhwc(x, n * CIN * plane, CIN, D, H, W, PD, PH, PW, Dp, Hp, Wp, xt, CIN)
                cur = n
            dst = r * K
            for kd in range(KD):
                iz = od * SD + kd * DD
                for kh in range(KH):
                    base = ((iz * Hp + oh * SH + kh * DH) * Wp + ow * SW) * CIN
                    if DW == 1:
                        av = a[dst:dst + run]
                        sv = xt[base:base + run]
                        for i in range(run):
                            av[i] = sv[i]
                        dst += run
                    else:
                        for kw in range(KW):
                            av = a[dst:dst + CIN]
                            sv = xt[base + kw * DW * CIN:base + kw * DW * CIN + CIN]
                            for i in range(CIN):
                                av[i] = sv[i]
                            dst += CIN
        _gemm_panels(mb, K, Np, a, 0, K, w, o, acc)
        _gemm_store(o, mb, Np, COUT, ospace, yrow, w, BIAS, ACT, clo, chi, y)
        m0 += mb


# ---- 1-D Conv of many items with few positions each ---------------------------------
#
# A batch of short 1-D inputs (Silero VAD's encoder over a StreamPool batch:
# 256 items of 4, 2 or 1 positions) leaves the panel kernel a tile of at most
# 4 positions per item, so it streams the whole of W once per item, and
# leaves ``conv_gemm`` an im2col copy of every row, taps that read only
# padding included.  ``conv_items`` runs one product per output position
# instead, its rows the batch items: X is transposed per block of items to
# channels last, [item, position, channel], so that the taps through which
# position ``ow`` reads inside X are one run of nk*CIN floats of each item's
# row (no copy, no padding), against rows kw0*CIN .. (kw0+nk)*CIN of Wt.

#: input floats of the block of items transposed at a time (64 KB: in L2 with
#: the block's output and the weights)
ITEMS_CHUNK = 16384

from .gemm import SET as _GEMM_SET, panel_gemm as _panel_gemm    # noqa: E402


@njit(**_jit)
def items_eligible(geo):
    """Whether ``conv_items`` runs the Conv of geometry ``geo``: 1-D, group 1,
    unit dilation."""
    return (geo[G_G] == 1 and geo[G_D] == 1 and geo[G_H] == 1 and geo[G_KD] == 1 and
            geo[G_KH] == 1 and geo[G_DW] == 1 and geo[G_PD] == 0 and geo[G_PH] == 0)


@_entry(_SIG_CONV)
def conv_items(x, w, geo, y):
    """1-D Conv (``items_eligible``) as one product per output position over
    blocks of batch items, Wt packed as for ``conv_gemm``."""
    clo, chi = clip_bounds(geo)
    N, CIN, COUT = geo[G_N], geo[G_CIN], geo[G_COUT]
    W, OW, KW, SW, PW = geo[G_W], geo[G_OW], geo[G_KW], geo[G_SW], geo[G_PW]
    BIAS, ACT = geo[G_BIAS], geo[G_ACT]
    K = KW * CIN
    Np = (COUT + 15) // 16 * 16
    row = W * CIN
    # blocks of about equal size (64 items of 31 at most: 22 + 21 + 21, not
    # 31 + 31 + 2, whose last product would be all tail)
    MB = min(N, max(6, ITEMS_CHUNK // row))
    nblk = (N + MB - 1) // MB
    MB = (N + nblk - 1) // nblk
    xt = np.empty(MB * row, np.float32)
    o = np.empty(MB * Np, np.float32)
    yrow = np.empty(MB, np.int64)
    xp, wp, op, xs = _fptr(xt), _fptr(w), _fptr(o), _fptr(x)
    for n0 in range(0, N, MB):
        mb = min(MB, N - n0)
        for i in range(mb):                 # items n0.. to [item, position, channel]
            src = (n0 + i) * row
            dst = i * row
            if W == 1:                      # (the same layout)
                for c in range(CIN):
                    xp[dst + c] = xs[src + c]
            elif W >= 4:                    # by 8 x 8 and 8 x 4 register transposes
                _pad_copy_nhwc(x, src, CIN, 1, 1, W, 0, 0, 0, 1, 1, W, xt[dst:], CIN)
            else:
                for c in range(CIN):
                    for p in range(W):
                        xp[dst + p * CIN + c] = xs[src + c * W + p]
        for ow in range(OW):
            kw0, nk = _tap_range(ow, 1, SW, 1, PW, KW, W)
            if nk > 0:
                ks = nk * CIN
                a0 = (ow * SW - PW + kw0) * CIN
                for n1 in range(0, Np, _GPANEL):
                    width = min(_GPANEL, Np - n1)
                    # panel n1 // 64 starts at n1*K; its rows from tap kw0 on
                    # (panel_gemm takes the panel at woff + n1*ks; SET: o is
                    # written, not added to)
                    _panel_gemm(mb, ks, Np, n1, n1 + width, xp, a0, row, wp,
                                n1 * (K - ks) + kw0 * CIN * width, op, 0, Np, _GEMM_SET)
            else:
                o[:mb * Np] = 0
            for r in range(mb):
                yrow[r] = (n0 + r) * COUT * OW + ow
            _gemm_store(o, mb, Np, COUT, OW, yrow, w, BIAS, ACT, clo, chi, y)
