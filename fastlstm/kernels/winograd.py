"""3x3 convolutions with stride 1 by Winograd's minimal filtering, F(m x m, 3x3)
(and 1-D convs of kernel 3 by F(4, 3)).

An m x m block of outputs ("tile") of one output channel reads an a x a patch
(a = m + 2) of each input channel.  Direct summation spends 9 multiply-adds
per output per input channel; F(m x m, 3x3) (Lavin and Gray, "Fast
Algorithms for Convolutional Neural Networks", 2016) spends a^2 / m^2:

    Y = A^T [ sum_c (G g_c G^T) (.) (B^T d_c B) ] A

with g_c the 3x3 filter and d_c the patch of channel c.  Two sizes:

- F(2x2, 3x3): a = 4, 4 multiply-adds per output; the transforms add,
  subtract and halve: results differ from direct summation by a few float32
  ulps of the sum's terms;
- F(4x4, 3x3): a = 6, 2.25 multiply-adds per output; the transforms'
  coefficients reach 8 and 1/24, so rounding is about 10x larger (measured on
  CRNN's convs: ~1e-6 of the output's scale against ~1e-7), still well inside
  float32 tolerance for a classifier's features.

Layout.  ``U = G g G^T`` is made once at load for every (output, input)
channel pair, stored as a^2 matrices ``U[xi][CIN8, COUT]`` (xi = the points
of the a x a transform, CIN8 the input channels rounded up to 8 with zero
rows) in the 64-column panels of ``fastlstm.pack.to_panels`` (output channels
zero-padded to 16), then the bias.  A call takes the tiles a block of ``TB``
at a time:

1. input transform (``_bt``): ``V[xi][tile, c]`` from a zero-padded
   channels-last copy of X, 8 channels per vector;
2. a^2 products ``M[xi] = V[xi] @ U[xi]`` on the panel GEMM of
   ``fastlstm.kernels.gemm`` (rows = tiles, sums over input channels);
3. output transform (``_at``) into a channels-last buffer, then bias and
   fused activation in place (``_act_rows``: a loop per activation, SiLU
   included), and the stores into Y (channels first), each output of a
   tile to every channel's plane: the innermost loop runs along a row of
   that buffer (the other order, a channel at a time along Y's rows, read
   the buffer a float per row and took 40% of the call: 32 -> 64 channels
   on 16 x 200, F(4x4), 1615 -> 963 us, one-off measurement against
   onnxruntime's 1580 / 1503 in the same runs);
4. with a MaxPool fused (geo[G_POOLH], geo[G_POOLW], windows that divide
   the tile), each window of a tile is reduced in that buffer, 8 channels a
   vector, and only the pooled outputs are stored (``_store_pooled``).
   Staging the pooled outputs channels last and moving them to Y by 8 x 8
   transposes measured the same and was dropped.

A layout with the tiles as columns (vectors along 8 tiles of a tile row,
stores of whole vectors into Y) was tried and measured slower on CRNN's
convs at width 100 (its tile rows are padded to 8 tiles: 25 -> 32 columns
of products).  The transforms are LLVM IR on <8 x float> values: written as
loops over the channels, LLVM left them scalar (too many pointers into one
array to prove apart) and they ran 6-10x slower.

1-D convs with a kernel of 3 (``conv_wino1``) use F(4, 3): 6 multiply-adds
per 4 outputs and input channel instead of 12, the same matrices, the tiles
of a block of items as the rows of the products (Silero's first encoder
conv, 4 frames, one tile per item: a StreamPool batch is a product of as
many rows as streams).

Where it runs: ``fastlstm.ops.conv`` picks it for 2-D Convs with a 3x3 kernel,
stride 1, no dilation, group 1 and at least 16 input and output channels
(a CRNN text reader's convs), and for 1-D ones with a kernel of 3, at least
16 channels in and out and output lengths a multiple of 4; inputs with a NaN,
an infinity or a huge value run on the panel kernel instead (see ``_wino``).
Measured with ``python benchmarks/conv_speed.py --wino`` (2-D) and
``--batch 128`` (1-D, Silero's encoder).
"""
from fractions import Fraction as _Fr

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .conv import (ACT_CLIP, ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_SILU, G_ACT, G_BIAS, G_CIN,
                   G_COUT, G_H, G_N, G_NP, G_OH, G_OW, G_PH, G_POOLH, G_POOLW, G_PW, G_W, NC,
                   _SIG_CONV, _clip, _entry, _fptr, _jit, _pad_copy_nhwc, _sigmoid, apply_act,
                   clip_bounds, conv_panel, epilogue, ir_act)
from .common import F32P
from .activations import ir_sigmoid
from .gemm import SET, panel_gemm
from .irvec import V, shuffle

#: channels per vector of the transforms (one AVX2 register of float32)
_VL = 8
#: float32 budget of a block's V and M (384 KB, most of the 512 KB L2 of the
#: machine this was tuned on: U, up to 1.8 MB, is read once per block, so
#: fewer larger blocks read less; ``python benchmarks/conv_speed.py --wino``,
#: the six convs: 1.13x onnxruntime with 192 KB, 1.22x with 384 KB, one run
#: each on the shared machine)
BLOCK_FLOATS = 98304

# The transform matrices (Lavin and Gray), exact as fractions.
_F2 = dict(
    BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G=[[1, 0, 0], [_Fr(1, 2), _Fr(1, 2), _Fr(1, 2)], [_Fr(1, 2), _Fr(-1, 2), _Fr(1, 2)],
       [0, 0, 1]],
    AT=[[1, 1, 1, 0], [0, 1, -1, -1]])
_F4 = dict(
    BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    G=[[_Fr(1, 4), 0, 0], [_Fr(-1, 6), _Fr(-1, 6), _Fr(-1, 6)],
       [_Fr(-1, 6), _Fr(1, 6), _Fr(-1, 6)], [_Fr(1, 24), _Fr(1, 12), _Fr(1, 6)],
       [_Fr(1, 24), _Fr(-1, 12), _Fr(1, 6)], [0, 0, 1]],
    AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
#: output tile size -> matrices
FORMS = {2: _F2, 4: _F4}


def eligible(wshape, group, strides, dilations):
    """Whether a Conv of weight shape ``wshape`` can run here (before the
    input's shape is known): 3x3 (``conv_wino``, ``conv_wino4``) or a 1-D
    kernel of 3 (``conv_wino1``), stride 1, no dilation, group 1."""
    if len(wshape) == 3:
        return (wshape[2] == 3 and group == 1 and list(strides) == [1]
                and list(dilations) == [1])
    return (len(wshape) == 4 and tuple(wshape[2:]) == (3, 3) and group == 1
            and list(strides) == [1, 1] and list(dilations) == [1, 1])


def pack(W, B, panel, m):
    """(flat weights, bias offset) for F(m x m, 3x3) (1-D weights: F(m, 3),
    a matrices U[xi] = (G g)[xi]): the a^2 matrices
    U[xi] = (G g G^T)[xi] as [CIN8, COUT] in panels (columns padded to a
    multiple of 16, rows to a multiple of 8 with zeros), then the bias, then
    ``panel``: the node's weights as ``conv_panel`` reads them (its bias
    last), for the inputs the transforms must not see (see ``conv_wino``).
    U is computed in float64 and rounded once."""
    from ..pack import to_panels
    g = np.array(FORMS[m]["G"], dtype=np.float64)
    a = g.shape[0]
    cout, cin = W.shape[0], W.shape[1]
    npad = -(-cout // 16) * 16
    cin8 = -(-cin // _VL) * _VL
    if W.ndim == 3:     # 1-D: the a vectors U[xi] = (G g)[xi]
        u = np.einsum("ik,ock->ico", g, W.astype(np.float64))       # [a, CIN, COUT]
        npt = a
    else:
        u = np.einsum("ik,ockl,jl->ijco", g, W.astype(np.float64), g)    # [a, a, CIN, COUT]
        npt = a * a
    mats = np.zeros((npt, cin8, npad), np.float32)
    mats[:, :cin, :cout] = u.reshape(npt, cin, cout)
    parts = [to_panels(mats[p]) for p in range(npt)]
    bias = B.reshape(-1) if B is not None else np.zeros(cout, np.float32)
    flat = np.ascontiguousarray(np.concatenate(parts + [bias.astype(np.float32), panel]),
                                np.float32)
    return flat, sum(p.size for p in parts)


#: inputs of a larger magnitude go to the panel kernel: the transforms sum up
#: to 36 inputs times coefficients up to 25 (F(4x4)), where a direct sum would
#: not overflow
BIG = np.float32(2.0 ** 100)


@njit(**_jit)
def _tame(x, off, n):
    """Whether x[off:off+n] is all finite and at most BIG in magnitude (one
    vectorized pass: NaN fails the comparison)."""
    bad = 0
    for i in range(off, off + n):
        bad |= not (abs(x[i]) <= BIG)
    return bad == 0


def _combine(builder, coefs, vals, vty):
    """sum_j coefs[j] * vals[j] as IR (coefficients 0 skipped, +-1 as adds and
    subtractions, others multiplied in float32)."""
    acc = None
    for cf, v in zip(coefs, vals):
        if cf == 0:
            continue
        if abs(cf) != 1:
            k = ir.Constant(vty, [float(abs(cf))] * _VL)
            v = builder.fmul(v, k)
        if acc is None:
            acc = v if cf > 0 else builder.fneg(v)
        else:
            acc = builder.fadd(acc, v) if cf > 0 else builder.fsub(acc, v)
    return acc


def _make_transform(mat, kind):
    """An intrinsic that applies one transform to 8 consecutive channels.

    kind "in" (mat = B^T, a x a): d[i][j] = src[sbase + i*rs + j*cs + c]
    (c < 8), dst[dbase + (k*a + l)*pl + c] = (B^T d B)[k][l].
    kind "out" (mat = A^T, m x a): M[i][j] = src[sbase + (i*a + j)*rs + c],
    dst[dbase + (k*m + l)*pl + c] = (A^T M A)[k][l]."""
    rows, a = len(mat), len(mat[0])

    @intrinsic
    def tr(typingctx, src, sbase, rs, cs, dst, dbase, pl):
        i64 = types.int64
        sig = types.void(src, i64, i64, i64, dst, i64, i64)

        def codegen(context, builder, signature, args):
            src, sbase, rs, cs, dst, dbase, pl = args
            vty = ir.VectorType(ir.FloatType(), _VL)
            sp = context.make_array(signature.args[0])(context, builder, src).data
            dp = context.make_array(signature.args[4])(context, builder, dst).data
            ll64 = ir.IntType(64)

            def c(v):
                return ir.Constant(ll64, v)

            def vptr(base, off):
                return builder.bitcast(builder.gep(base, [off], inbounds=True),
                                       vty.as_pointer())

            if kind == "in":
                d = [[builder.load(vptr(sp, builder.add(sbase, builder.add(
                    builder.mul(c(i), rs), builder.mul(c(j), cs)))), align=4)
                    for j in range(a)] for i in range(a)]
            else:
                d = [[builder.load(vptr(sp, builder.add(sbase, builder.mul(c(i * a + j), rs))),
                                   align=4) for j in range(a)] for i in range(a)]
            # rows: t = mat @ d, then columns: out = t @ mat^T
            t = [[_combine(builder, mat[k], [d[i][j] for i in range(a)], vty)
                  for j in range(a)] for k in range(rows)]
            for k in range(rows):
                for l_ in range(rows):
                    o = _combine(builder, mat[l_], t[k], vty)
                    builder.store(o, vptr(dp, builder.add(dbase, builder.mul(
                        c(k * rows + l_), pl))), align=4)
            return context.get_dummy_value()

        return sig, codegen
    return tr


_bt2, _at2 = _make_transform(_F2["BT"], "in"), _make_transform(_F2["AT"], "out")
_bt4, _at4 = _make_transform(_F4["BT"], "in"), _make_transform(_F4["AT"], "out")


@njit(**dict(_jit, inline="always"))
def _wino(x, w, geo, y, MT, part, nparts):
    """F(MT x MT, 3x3) (MT = 2 or 4, a literal: the branches on it fold), the
    tiles of part ``part`` of ``nparts`` of every item (``wino_task``: the
    parts write disjoint outputs; each output is the same sums whatever the
    parts, see ``panel_gemm``)."""
    N, CIN, COUT = geo[G_N], geo[G_CIN], geo[G_COUT]
    H, W, OH, OW = geo[G_H], geo[G_W], geo[G_OH], geo[G_OW]
    PH, PW = geo[G_PH], geo[G_PW]
    BIAS, ACT = geo[G_BIAS], geo[G_ACT]
    clo, chi = clip_bounds(geo)
    if not _tame(x, 0, N * CIN * H * W):
        # A NaN or infinity would reach every output of its tiles through
        # the transforms (and inf - inf is NaN), where a direct sum makes NaN
        # or inf only the outputs whose window holds it: such inputs (and
        # huge ones) run on the panel kernel, whose weights follow the bias
        # (all of Y by part 0).
        if part != 0:
            return
        g2 = geo.copy()
        g2[G_BIAS] = geo[G_NP] * NC * CIN * 9
        if geo[G_POOLH] == 0 and ACT != ACT_SILU:
            conv_panel(x, w[BIAS + COUT:], g2, y)
            return
        # (the panel kernel has neither: it writes Y, then the epilogue)
        g2[G_ACT] = ACT_NONE
        t = np.empty(N * COUT * OH * OW, np.float32)
        conv_panel(x, w[BIAS + COUT:], g2, t)
        epilogue(t, geo, y)
        return
    A = MT + 2
    NPT = A * A
    C8 = (CIN + _VL - 1) // _VL * _VL
    Np = (COUT + 15) // 16 * 16
    TH = (OH + MT - 1) // MT
    TW = (OW + MT - 1) // MT
    tiles = TH * TW
    # this part's tiles [ta, tz) of every item (each part makes its own
    # padded copy of X: no barrier between the parts, for a copy that is a
    # small share of the conv)
    ta = tiles * part // nparts
    tz = tiles * (part + 1) // nparts
    if tz <= ta:
        return
    # the padded copy covers every tile's patch: zeros past the input (the
    # node's end padding, and the rows / columns of a last tile that reaches
    # past Y: those outputs are not written)
    Hp = MT * TH + 2
    Wp = MT * TW + 2
    # tiles per block: within the budget, in blocks of equal size (U is read
    # once per block: 26 tiles as 12 + 12 + 2 read it three times)
    TB = max(6, min(BLOCK_FLOATS // (NPT * (C8 + Np)), 96))
    nblk = (tz - ta + TB - 1) // TB
    TB = (tz - ta + nblk - 1) // nblk
    # q's rows (one per output of a tile) are QS floats apart, not a multiple
    # of 256 bytes (the output transform writes a column of rows per vector)
    QS = Np + 8
    xt = np.empty(Hp * Wp * C8, np.float32)
    v = np.empty(NPT * TB * C8, np.float32)
    m = np.empty(NPT * TB * Np, np.float32)
    q = np.empty(MT * MT * TB * QS, np.float32)
    # per tile of a block: its first output's offset in a channel's plane,
    # and its rows and columns inside Y
    tpos = np.empty(TB, np.int64)
    trows = np.empty(TB, np.int64)
    tcols = np.empty(TB, np.int64)
    vp, mp, wp = _fptr(v), _fptr(m), _fptr(w)
    qp, yp = _fptr(q), _fptr(y)
    ospace = OH * OW
    # a fused MaxPool (windows of PKH x PKW, as many strides, inside a tile:
    # the caller checks that they divide MT): Y is the pooled output
    PKH, PKW = geo[G_POOLH], geo[G_POOLW]
    POW = OW // PKW if PKH else OW
    pspace = (OH // PKH) * POW if PKH else ospace
    vpl = TB * C8           # one point's matrix of V and of M
    mpl = TB * Np
    for n in range(N):
        _pad_copy_nhwc(x, n * CIN * H * W, CIN, 1, H, W, 0, PH, PW, 1, Hp, Wp, xt, C8)
        ybase = n * COUT * ospace
        t0 = ta
        while t0 < tz:
            tb = min(TB, tz - t0)
            for r in range(tb):
                t = t0 + r
                th = t // TW
                tw = t - th * TW
                sb = (MT * th * Wp + MT * tw) * C8
                for c in range(0, C8, _VL):
                    if MT == 2:
                        _bt2(xt, sb + c, Wp * C8, C8, v, r * C8 + c, vpl)
                    else:
                        _bt4(xt, sb + c, Wp * C8, C8, v, r * C8 + c, vpl)
            for p in range(NPT):        # (SET: M is written, not zeroed and added to)
                panel_gemm(tb, C8, Np, 0, Np, vp, p * vpl, C8, wp, p * C8 * Np, mp, p * mpl,
                           Np, SET)
            for r in range(tb):
                th = (t0 + r) // TW
                tw = t0 + r - th * TW
                tpos[r] = MT * th * OW + MT * tw
                trows[r] = min(MT, OH - MT * th)
                tcols[r] = min(MT, OW - MT * tw)
                for c in range(0, Np, _VL):
                    if MT == 2:
                        _at2(m, r * Np + c, mpl, 0, q, r * MT * MT * QS + c, QS)
                    else:
                        _at4(m, r * Np + c, mpl, 0, q, r * MT * MT * QS + c, QS)
            _act_rows(qp, QS, tb * MT * MT, wp, BIAS, COUT, ACT, clo, chi)
            if PKH:
                _store_pooled(t0, tb, TW, MT, PKH, PKW, POW, COUT, QS, trows, tcols, qp, yp,
                              n * COUT * pspace, pspace)
                t0 += tb
                continue
            # Y is channels first: each output of a tile to every channel's
            # plane (an innermost loop over the channels reads q along its rows)
            for r in range(tb):
                for a in range(trows[r]):
                    for b in range(tcols[r]):
                        qo = (r * MT * MT + a * MT + b) * QS
                        yo = ybase + tpos[r] + a * OW + b
                        for c in range(COUT):
                            yp[yo + c * ospace] = qp[qo + c]
            t0 += tb


@intrinsic
def _sig_rows8(typingctx, qp, q0, QS, b, boff, silu):
    """q[q0 + r*QS + i] = s(q[q0 + r*QS + i] + b[boff + i]) for r < 4, i < 8, where s
    is the sigmoid (silu 0) or x * sigmoid(x) (silu 1): the same 8 channels of
    four outputs of a tile as four independent vector chains (one row's loop
    waited on the latency of each element's ~20 dependent operations: a SiLU
    of 64 channels took 2.9 cycles per element, against 1.7 with two chains,
    one-off timings of such loops; as a loop over four rows of one pointer
    LLVM left it scalar, unable to prove the rows apart)."""
    sig = types.void(qp, types.int64, types.int64, b, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        qp, q0, QS, b, boff, silu = args
        v = V(builder, _VL)
        is_silu = builder.icmp_signed("!=", silu, v.int(0))
        bv = v.load(b, boff)
        ats = [builder.add(q0, builder.mul(v.int(r), QS)) for r in range(4)]
        xs = [builder.fadd(v.load(qp, at), bv) for at in ats]     # (all loads first)
        for at, x in zip(ats, xs):
            sg = ir_sigmoid(v, x)
            v.store(builder.select(is_silu, builder.fmul(x, sg), sg), qp, at)
        return context.get_dummy_value()

    return sig, codegen


@njit(**dict(_jit, inline="always"))
def _act_rows(qp, QS, nrows, wp, BIAS, n, ACT, clo, chi):
    """``_act_run`` of q's first ``nrows`` rows (QS floats apart); Sigmoid and
    SiLU four rows at a time, 8 channels per vector (``_sig_rows8``)."""
    r = 0
    if ACT == ACT_SILU or ACT == ACT_SIGMOID:
        silu = 1 if ACT == ACT_SILU else 0
        n8 = n // _VL * _VL
        while r + 4 <= nrows:
            for c in range(0, n8, _VL):
                _sig_rows8(qp, r * QS + c, QS, wp, BIAS + c, silu)
            if n8 < n:
                for rr in range(r, r + 4):
                    _act_run(qp, rr * QS + n8, wp, BIAS + n8, n - n8, ACT, clo, chi)
            r += 4
    while r < nrows:
        _act_run(qp, r * QS, wp, BIAS, n, ACT, clo, chi)
        r += 1


@njit(**dict(_jit, inline="always"))
def _act_run(qp, qo, wp, BIAS, n, ACT, clo, chi):
    """q[qo + c] = act(q[qo + c] + bias[c]) for c < n: the bias and the fused
    activation of one output of a tile, over its channels (a loop per
    activation, each vectorized; one loop that branched per element on the
    activation stayed scalar)."""
    if ACT == ACT_RELU:
        for c in range(n):
            v = qp[qo + c] + wp[BIAS + c]
            qp[qo + c] = np.float32(0) if v < 0 else v
    elif ACT == ACT_SIGMOID:
        for c in range(n):
            qp[qo + c] = _sigmoid(qp[qo + c] + wp[BIAS + c])
    elif ACT == ACT_CLIP:
        for c in range(n):
            qp[qo + c] = _clip(qp[qo + c] + wp[BIAS + c], clo, chi)
    elif ACT == ACT_SILU:
        for c in range(n):
            v = qp[qo + c] + wp[BIAS + c]
            qp[qo + c] = v * _sigmoid(v)
    else:
        for c in range(n):
            qp[qo + c] = qp[qo + c] + wp[BIAS + c]


@intrinsic
def _vmax8(typingctx, p, a, b):
    """p[a + i] = MaxPool's rule (``kernels.conv.pool_max``) of p[a + i] and
    then p[b + i], i < 8, in one vector (as a loop over a pointer, LLVM left
    it scalar: two offsets into one buffer it could not prove apart)."""
    sig = types.void(p, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr, a, b = args
        vty = ir.VectorType(ir.FloatType(), _VL)
        pa = builder.bitcast(builder.gep(ptr, [a], inbounds=True), vty.as_pointer())
        pb = builder.bitcast(builder.gep(ptr, [b], inbounds=True), vty.as_pointer())
        x = builder.load(pa, align=4)
        y = builder.load(pb, align=4)
        # keep x where it is NaN or y <= x, else y (greater or NaN)
        keep = builder.or_(builder.fcmp_unordered("uno", x, x), builder.fcmp_ordered("<=", y, x))
        builder.store(builder.select(keep, x, y), pa, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(**dict(_jit, inline="always"))
def _store_pooled(t0, tb, TW, MT, PKH, PKW, POW, COUT, QS, trows, tcols, qp, yp, ybase,
                  pspace):
    """The stores of a block of tiles (activated) with a fused MaxPool: each
    window inside a tile (of the tile's rows and columns that Y has, whole
    windows only: the pool's floor) reduced over its taps in MaxPool's
    order (rows, then columns) into its first tap's row of q, then one
    store per channel's plane.  (Unfused, the Conv wrote every output to
    its plane and the pool read them back: CRNN's MaxPools took 0.3-0.4x
    onnxruntime's time in the graph, whose pools read its channel-blocked
    layout with no shuffles.)"""
    for r in range(tb):
        th = (t0 + r) // TW
        tw = t0 + r - th * TW
        for pa in range(trows[r] // PKH):
            for pb in range(tcols[r] // PKW):
                yo = ybase + ((MT * th) // PKH + pa) * POW + (MT * tw) // PKW + pb
                q0 = (r * MT * MT + pa * PKH * MT + pb * PKW) * QS
                for i in range(PKH):
                    for j in range(PKW):
                        if i + j > 0:
                            qo = q0 + (i * MT + j) * QS
                            for c in range(0, COUT, _VL):   # (q's rows have Np + 8 floats)
                                _vmax8(qp, q0 + c, qo + c)
                for c in range(COUT):
                    yp[yo + c * pspace] = qp[q0 + c]


@_entry(_SIG_CONV)
def conv_wino(x, w, geo, y):
    """Conv 3x3, stride 1, group 1 by F(2x2, 3x3): y[N*COUT*OH*OW] from
    x[N*CIN*H*W]; W packed by ``pack(..., 2)``."""
    _wino(x, w, geo, y, 2, 0, 1)


@_entry(_SIG_CONV)
def conv_wino4(x, w, geo, y):
    """As ``conv_wino`` by F(4x4, 3x3); W packed by ``pack(..., 4)``."""
    _wino(x, w, geo, y, 4, 0, 1)


@intrinsic
def _as_f32p(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(F32P))
    return F32P(types.int64), codegen


@intrinsic
def _as_i64p(typingctx, addr):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(_I64P))
    return _I64P(types.int64), codegen


_I64P = types.CPointer(types.int64)
#: ``wino_task``'s argument block: int64 fields, in this order
TASK_FIELDS = ("x", "x_len", "w", "w_len", "geo", "geo_len", "y", "y_len", "tile")
_TASK = []


def wino_task():
    """The address of a C function ``task(int64* args, int tid, int n)`` for
    a thread team (``fastlstm._frontend.Team.run_task``): thread ``tid`` of
    ``n`` runs ``conv_wino`` (args[8] = 2) or ``conv_wino4`` (4) on its share
    of the tiles, X, W, geo and Y given by address and length in args
    (``TASK_FIELDS``).  Compiled on first use."""
    if not _TASK:
        from numba import carray, cfunc

        @cfunc(types.void(_I64P, types.int32, types.int32), **_jit)
        def task(a, tid, n):
            x = carray(_as_f32p(a[0]), a[1])
            w = carray(_as_f32p(a[2]), a[3])
            geo = carray(_as_i64p(a[4]), a[5])
            y = carray(_as_f32p(a[6]), a[7])
            if a[8] == 2:
                _wino(x, w, geo, y, 2, tid, n)
            else:
                _wino(x, w, geo, y, 4, tid, n)
        _TASK.append(task)
    return _TASK[0].address


def _make_transform1(mat):
    """An intrinsic that applies one 1-D transform (``mat``, rows x a) to 8
    consecutive channels: d[j] = src[sbase + j*ss + c] (c < 8, j < a),
    dst[dbase + k*pl + c] = (mat @ d)[k]."""
    rows, a = len(mat), len(mat[0])

    @intrinsic
    def tr(typingctx, src, sbase, ss, dst, dbase, pl):
        i64 = types.int64
        sig = types.void(src, i64, i64, dst, i64, i64)

        def codegen(context, builder, signature, args):
            src, sbase, ss, dst, dbase, pl = args
            v = V(builder, _VL)
            sp = context.make_array(signature.args[0])(context, builder, src).data
            dp = context.make_array(signature.args[3])(context, builder, dst).data
            d = [v.load(sp, v.at(sbase, builder.mul(v.int(j), ss))) for j in range(a)]
            for k in range(rows):
                v.store(_combine(builder, mat[k], d, v.ty), dp,
                        v.at(dbase, builder.mul(v.int(k), pl)))
            return context.get_dummy_value()

        return sig, codegen
    return tr


_bt1, _at1 = _make_transform1(_F4["BT"]), _make_transform1(_F4["AT"])


def _make_store4(act):
    """An intrinsic storing 4 rows of q (output positions t) x 8 channels
    into Y, channels first, with the bias and activation ``act`` (none,
    Relu or Clip): y[y0 + c*ys + t] = act(q[q0 + t*qs + c] + b[boff + c]),
    the 4 x 8 block transposed in registers."""
    @intrinsic
    def st(typingctx, q, q0, qs, b, boff, y, y0, ys, lo, hi):
        i64, f32 = types.int64, types.float32
        sig = types.void(F32P, i64, i64, F32P, i64, F32P, i64, i64, f32, f32)

        def codegen(context, builder, signature, args):
            q, q0, qs, b, boff, y, y0, ys, lo, hi = args
            v = V(builder, _VL)
            bias, lov, hiv = v.load(b, boff), v.splat(lo), v.splat(hi)
            rows = []
            for t in range(4):
                x = builder.fadd(v.load(q, v.at(q0, builder.mul(v.int(t), qs))), bias)
                rows.append(ir_act(v, x, act, lov, hiv))
            f4 = ir.VectorType(ir.FloatType(), 4).as_pointer()
            for half in (0, 4):
                lanes = [half, 8 + half, half + 1, 9 + half, half + 2, 10 + half, half + 3,
                         11 + half]
                a = shuffle(builder, rows[0], rows[1], lanes)
                c = shuffle(builder, rows[2], rows[3], lanes)
                for k in range(4):
                    col = shuffle(builder, a, c, [2 * k, 2 * k + 1, 8 + 2 * k, 9 + 2 * k])
                    at = v.at(y0, builder.mul(v.int(half + k), ys))
                    builder.store(col, builder.bitcast(builder.gep(y, [at], inbounds=True), f4),
                                  align=4)
            return context.get_dummy_value()

        return sig, codegen
    st.__name__ = f"wino1_store4_{act}"
    return st


_st4_none, _st4_relu, _st4_clip = (_make_store4(a) for a in (ACT_NONE, ACT_RELU, ACT_CLIP))


@njit(**_jit)
def _store_tiles(q, rows, Np, COUT, OW, TW, n0, w, BIAS, ACT, clo, chi, y):
    """Rows r*4 + t of q (tile r = item n0 + r // TW, its tile r % TW;
    output position t) into Y with bias and activation: 8 channels at a
    time by ``_make_store4`` where the activation allows, else (and the
    channels past a multiple of 8) a float at a time."""
    C8 = COUT // 8 * 8 if ACT == ACT_NONE or ACT == ACT_RELU or ACT == ACT_CLIP else 0
    qp, yp, wp = _fptr(q), _fptr(y), _fptr(w)
    for r in range(rows):
        i = r // TW
        yo = (n0 + i) * COUT * OW + 4 * (r - i * TW)
        qo = r * 4 * Np
        for c in range(0, C8, 8):
            if ACT == ACT_RELU:
                _st4_relu(qp, qo + c, Np, wp, BIAS + c, yp, yo + c * OW, OW, clo, chi)
            elif ACT == ACT_CLIP:
                _st4_clip(qp, qo + c, Np, wp, BIAS + c, yp, yo + c * OW, OW, clo, chi)
            else:
                _st4_none(qp, qo + c, Np, wp, BIAS + c, yp, yo + c * OW, OW, clo, chi)
        for c in range(C8, COUT):
            for t in range(4):
                y[yo + c * OW + t] = apply_act(q[qo + t * Np + c] + w[BIAS + c], ACT, clo, chi)


@_entry(_SIG_CONV)
def conv_wino1(x, w, geo, y):
    """1-D Conv, kernel 3, stride 1, group 1 by F(4, 3): y[N*COUT*OW] from
    x[N*CIN*W], OW a multiple of 4; W packed by ``pack(..., 4)`` from 1-D
    weights.  6 multiply-adds per 4 outputs and input channel where the
    direct sum spends 12 (10 for Silero's 4 frames, whose end taps read
    padding).  Made for many short items (Silero's encoder in a StreamPool
    batch, its first conv 129 -> 128 channels over 4 frames): the tiles of
    a block of items are the rows of 6 products ``M[xi] = V[xi] @ U[xi]``.

    1. each item moved channels last and padded (``xt``: [item][Wp][C8]);
    2. input transform (``_bt1``, 8 channels a vector) into V[xi][tile, c];
    3. the 6 products on the panel GEMM;
    4. output transform (``_at1``) into rows of q (one per output
       position), then bias, activation and the stores into Y (channels
       first, ``_store_tiles``: 4 positions x 8 channels transposed in
       registers).

    Inputs with a NaN, an infinity or a huge value run on the panel kernel
    (see ``_wino``)."""
    N, CIN, COUT = geo[G_N], geo[G_CIN], geo[G_COUT]
    W, OW, PW = geo[G_W], geo[G_OW], geo[G_PW]
    BIAS, ACT = geo[G_BIAS], geo[G_ACT]
    clo, chi = clip_bounds(geo)
    if not _tame(x, 0, N * CIN * W):
        g2 = geo.copy()
        g2[G_BIAS] = geo[G_NP] * NC * CIN * 3
        conv_panel(x, w[BIAS + COUT:], g2, y)
        return
    MT = 4
    A = 6
    C8 = (CIN + _VL - 1) // _VL * _VL
    Np = (COUT + 15) // 16 * 16
    TW = OW // MT
    Wp = MT * TW + 2
    # items per block: their tiles' V and M within the budget, blocks of
    # about equal size
    IB = max(1, min(N, max(6, BLOCK_FLOATS // (A * (C8 + Np))) // TW))
    nblk = (N + IB - 1) // IB
    IB = (N + nblk - 1) // nblk
    R = IB * TW                 # rows (tiles) of a full block
    xt = np.empty(IB * Wp * C8, np.float32)
    v = np.empty(A * R * C8, np.float32)
    m = np.empty(A * R * Np, np.float32)
    q = np.empty(R * MT * Np, np.float32)
    vp, mp, wp = _fptr(v), _fptr(m), _fptr(w)
    for n0 in range(0, N, IB):
        ib = min(IB, N - n0)
        rows = ib * TW
        # 1. channels last, padded: xt[i][PW + p][c] = x[n0 + i][c][p]
        for i in range(ib):
            _pad_copy_nhwc(x, (n0 + i) * CIN * W, CIN, 1, 1, W, 0, 0, PW, 1, 1, Wp,
                           xt[i * Wp * C8:], C8)
        # 2. tile r = (item i, tile s) reads positions 4s .. 4s + 5 of item i
        for i in range(ib):
            for s in range(TW):
                r = i * TW + s
                for c in range(0, C8, _VL):
                    _bt1(xt, (i * Wp + MT * s) * C8 + c, C8, v, r * C8 + c, R * C8)
        # 3. (SET: M is written, not zeroed and added to)
        for p in range(A):
            panel_gemm(rows, C8, Np, 0, Np, vp, p * R * C8, C8, wp, p * C8 * Np, mp,
                       p * R * Np, Np, SET)
        # 4. output position t of tile r -> row r*4 + t of q
        for r in range(rows):
            for c in range(0, Np, _VL):
                _at1(m, r * Np + c, R * Np, q, r * MT * Np + c, Np)
        _store_tiles(q, rows, Np, COUT, OW, TW, n0, w, BIAS, ACT, clo, chi, y)
