"""3x3 convolutions with stride 1 by Winograd's minimal filtering, F(2x2, 3x3).

A 2x2 block of outputs of one output channel reads a 4x4 patch of each input
channel.  Direct summation spends 9 multiply-adds per output per input
channel; F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016) spends 4:

    Y(2x2) = A^T [ sum_c (G g_c G^T) (.) (B^T d_c B) ] A

with g_c the 3x3 filter and d_c the 4x4 input patch of channel c.  The
transforms only add and subtract (B, A) or halve (G), so they cost little and
round little: results differ from direct summation by a few float32 ulps of
the inputs' magnitude.

Layout.  ``U = G g G^T`` is made once at load for every (output, input)
channel pair and stored as 16 matrices ``U[xi][CIN, COUT]`` (xi = the 16
points of the 4x4 transform), each in the 64-column panels of
``fastlstm.pack.to_panels`` (output channels zero-padded to 16), then the bias.
A call takes the output's 2x2 blocks ("tiles") a block of ``TB`` at a time:

1. input transform: ``V[xi][tile, c]`` from a zero-padded channels-last copy
   of X (one vector loop along the channels per tile);
2. 16 products ``M[xi] = V[xi] @ U[xi]`` on the panel GEMM of
   ``fastlstm.kernels.gemm`` (rows = tiles, sums over input channels);
3. output transform, bias and fused activation, written to Y channels first.

Where it runs: ``fastlstm.ops.conv`` picks it for 2-D Convs with a 3x3 kernel,
stride 1, no dilation, group 1 and at least 8 input and 16 output channels
(a CRNN text reader's convs).  Measured with ``python benchmarks/conv_speed.py
--wino`` (see there).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .. import config
from .conv import (ACT_CLIP, ACT_RELU, ACT_SIGMOID, G_ACT, G_BIAS, G_CIN, G_COUT, G_H, G_N,
                   G_NP, G_OH, G_OW, G_PH, G_PW, G_W, NC, _SIG_CONV, conv_panel, _clip, _entry, _fptr,
                   _pad_copy_nhwc, _sigmoid, clip_bounds)
from .gemm import panel_gemm

_jit = dict(nogil=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
            error_model=config.NUMBA_ERROR_MODEL)

#: points of the 4x4 transform
NPOINT = 16
#: float32 budget of a block's V and M buffers (about 192 KB: with U's
#: panels being read they stay in the 512 KB L2 of the machine this was tuned on)
BLOCK_FLOATS = 49152

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def eligible(wshape, group, strides, dilations):
    """Whether a Conv of weight shape ``wshape`` can run here (before the
    input's shape is known)."""
    return (len(wshape) == 4 and tuple(wshape[2:]) == (3, 3) and group == 1
            and list(strides) == [1, 1] and list(dilations) == [1, 1])


def pack(W, B, panel):
    """(flat weights, bias offset): the 16 matrices U[xi] = (G g G^T)[xi] as
    [CIN, COUT] in panels (columns padded to a multiple of 16), then the bias,
    then ``panel``: the node's weights as ``conv_panel`` reads them (its bias
    last), for inputs the transforms must not see (see ``conv_wino``).
    U is computed in float64 and rounded once."""
    from ..pack import to_panels
    cout, cin = W.shape[0], W.shape[1]
    npad = -(-cout // 16) * 16
    u = np.einsum("ik,ockl,jl->ijco", _G, W.astype(np.float64), _G)   # [4, 4, CIN, COUT]
    mats = np.zeros((NPOINT, cin, npad), np.float32)
    mats[:, :, :cout] = u.reshape(NPOINT, cin, cout)
    parts = [to_panels(mats[p]) for p in range(NPOINT)]
    bias = B.reshape(-1) if B is not None else np.zeros(cout, np.float32)
    flat = np.ascontiguousarray(np.concatenate(parts + [bias.astype(np.float32), panel]),
                                np.float32)
    return flat, sum(p.size for p in parts)


#: inputs of a larger magnitude go to the panel kernel: the transforms add up
#: to 4 inputs and the output transform 9 products' sums, where a direct sum
#: would not overflow
BIG = np.float32(2.0 ** 100)


@njit(**_jit)
def _tame(x, off, n):
    """Whether x[off:off+n] is all finite and at most BIG in magnitude (one
    vectorized pass: NaN fails the comparison)."""
    bad = 0
    for i in range(off, off + n):
        bad |= not (abs(x[i]) <= BIG)
    return bad == 0


#: channels per vector of the transforms (8 floats: one AVX2 register)
_VL = 8


def _vec_transform(kind):
    """An intrinsic that applies one transform to 8 consecutive channels:

    kind "in":  dst[dbase + xi*pl + c] = (B^T d B)[xi] for the 4x4 patch
                d[i][j] = src[sbase + i*rs + j*cs + c], c < 8  (16 stores)
    kind "out": dst[dbase + i*pl + c] = (A^T m A)[i], the 2x2 outputs row
                major, of m[k] = src[sbase + k*rs + c]         (4 stores)

    Written as LLVM IR on <8 x float> values: the same code as loops over c
    was left scalar by LLVM (its 16 loads and 16 stores through one array
    are too many pointers to prove apart), and ran 6-10x slower."""
    @intrinsic
    def vt(typingctx, src, sbase, rs, cs, dst, dbase, pl):
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
                return builder.bitcast(builder.gep(base, [off], inbounds=True), vty.as_pointer())

            def ld(off):
                return builder.load(vptr(sp, off), align=4)

            def st(val, off):
                builder.store(val, vptr(dp, off), align=4)

            add, sub = builder.fadd, builder.fsub
            if kind == "in":
                d = [[ld(builder.add(sbase, builder.add(builder.mul(c(i), rs),
                                                        builder.mul(c(j), cs))))
                      for j in range(4)] for i in range(4)]
                t = [[sub(d[0][j], d[2][j]) for j in range(4)],
                     [add(d[1][j], d[2][j]) for j in range(4)],
                     [sub(d[2][j], d[1][j]) for j in range(4)],
                     [sub(d[1][j], d[3][j]) for j in range(4)]]
                for i in range(4):
                    row = (sub(t[i][0], t[i][2]), add(t[i][1], t[i][2]),
                           sub(t[i][2], t[i][1]), sub(t[i][1], t[i][3]))
                    for j in range(4):
                        st(row[j], builder.add(dbase, builder.mul(c(4 * i + j), pl)))
            else:
                m = [[ld(builder.add(sbase, builder.mul(c(4 * i + j), rs))) for j in range(4)]
                     for i in range(4)]
                u0 = [add(add(m[0][j], m[1][j]), m[2][j]) for j in range(4)]
                u1 = [sub(sub(m[1][j], m[2][j]), m[3][j]) for j in range(4)]
                outs = (add(add(u0[0], u0[1]), u0[2]), sub(sub(u0[1], u0[2]), u0[3]),
                        add(add(u1[0], u1[1]), u1[2]), sub(sub(u1[1], u1[2]), u1[3]))
                for i in range(4):
                    st(outs[i], builder.add(dbase, builder.mul(c(i), pl)))
            return context.get_dummy_value()

        return sig, codegen
    return vt


_bt8 = _vec_transform("in")
_at8 = _vec_transform("out")


@njit(**_jit)
def _input_transform(xt, Wp, C, th, tw, v, r, TB):
    """V[xi][r, c] for the tile at (th, tw): B^T d B of the 4x4 patch at padded
    (2th, 2tw) of ``xt`` (channels last, rows Wp columns wide)."""
    b = (2 * th * Wp + 2 * tw) * C
    rs = Wp * C
    pl = TB * C             # one point's matrix
    o = r * C
    c8 = C // _VL * _VL
    for c in range(0, c8, _VL):
        _bt8(xt, b + c, rs, C, v, o + c, pl)
    for c in range(c8, C):
        # rows: B^T d, per column j
        d00 = xt[b + c]
        d01 = xt[b + C + c]
        d02 = xt[b + 2 * C + c]
        d03 = xt[b + 3 * C + c]
        d10 = xt[b + rs + c]
        d11 = xt[b + rs + C + c]
        d12 = xt[b + rs + 2 * C + c]
        d13 = xt[b + rs + 3 * C + c]
        d20 = xt[b + 2 * rs + c]
        d21 = xt[b + 2 * rs + C + c]
        d22 = xt[b + 2 * rs + 2 * C + c]
        d23 = xt[b + 2 * rs + 3 * C + c]
        d30 = xt[b + 3 * rs + c]
        d31 = xt[b + 3 * rs + C + c]
        d32 = xt[b + 3 * rs + 2 * C + c]
        d33 = xt[b + 3 * rs + 3 * C + c]
        t00, t01, t02, t03 = d00 - d20, d01 - d21, d02 - d22, d03 - d23
        t10, t11, t12, t13 = d10 + d20, d11 + d21, d12 + d22, d13 + d23
        t20, t21, t22, t23 = d20 - d10, d21 - d11, d22 - d12, d23 - d13
        t30, t31, t32, t33 = d10 - d30, d11 - d31, d12 - d32, d13 - d33
        # columns: (B^T d) B
        v[o + c] = t00 - t02
        v[pl + o + c] = t01 + t02
        v[2 * pl + o + c] = t02 - t01
        v[3 * pl + o + c] = t01 - t03
        v[4 * pl + o + c] = t10 - t12
        v[5 * pl + o + c] = t11 + t12
        v[6 * pl + o + c] = t12 - t11
        v[7 * pl + o + c] = t11 - t13
        v[8 * pl + o + c] = t20 - t22
        v[9 * pl + o + c] = t21 + t22
        v[10 * pl + o + c] = t22 - t21
        v[11 * pl + o + c] = t21 - t23
        v[12 * pl + o + c] = t30 - t32
        v[13 * pl + o + c] = t31 + t32
        v[14 * pl + o + c] = t32 - t31
        v[15 * pl + o + c] = t31 - t33


@njit(**_jit)
def _output_transform(m, r, TB, Np, COUT, q, qb):
    """q[qb + i*Np + c] = (A^T M A)[i] (the 2x2 outputs, row major) for tile r,
    c < COUT."""
    pl = TB * Np
    o = r * Np
    c8 = COUT // _VL * _VL
    for c in range(0, c8, _VL):
        _at8(m, o + c, pl, 0, q, qb + c, Np)
    for c in range(c8, COUT):
        m00 = m[o + c]
        m01 = m[pl + o + c]
        m02 = m[2 * pl + o + c]
        m03 = m[3 * pl + o + c]
        m10 = m[4 * pl + o + c]
        m11 = m[5 * pl + o + c]
        m12 = m[6 * pl + o + c]
        m13 = m[7 * pl + o + c]
        m20 = m[8 * pl + o + c]
        m21 = m[9 * pl + o + c]
        m22 = m[10 * pl + o + c]
        m23 = m[11 * pl + o + c]
        m30 = m[12 * pl + o + c]
        m31 = m[13 * pl + o + c]
        m32 = m[14 * pl + o + c]
        m33 = m[15 * pl + o + c]
        # rows: A^T M
        u00, u01, u02, u03 = m00 + m10 + m20, m01 + m11 + m21, m02 + m12 + m22, m03 + m13 + m23
        u10, u11, u12, u13 = m10 - m20 - m30, m11 - m21 - m31, m12 - m22 - m32, m13 - m23 - m33
        q[qb + c] = u00 + u01 + u02
        q[qb + Np + c] = u01 - u02 - u03
        q[qb + 2 * Np + c] = u10 + u11 + u12
        q[qb + 3 * Np + c] = u11 - u12 - u13


@njit(**dict(_jit, inline="always"))
def _act(v, ACT, clo, chi):
    """The fused activation of ``fastlstm.kernels.conv`` (geo[G_ACT])."""
    if ACT == ACT_RELU:
        return np.float32(0) if v < 0 else v
    if ACT == ACT_SIGMOID:
        return _sigmoid(v)
    if ACT == ACT_CLIP:
        return _clip(v, clo, chi)
    return v


@_entry(_SIG_CONV)
def conv_wino(x, w, geo, y):
    """Conv 3x3, stride 1, group 1 (see the module docstring): y[N*COUT*OH*OW]
    from x[N*CIN*H*W]; W packed by ``pack``."""
    N, CIN, COUT = geo[G_N], geo[G_CIN], geo[G_COUT]
    H, W, OH, OW = geo[G_H], geo[G_W], geo[G_OH], geo[G_OW]
    PH, PW = geo[G_PH], geo[G_PW]
    BIAS, ACT = geo[G_BIAS], geo[G_ACT]
    clo, chi = clip_bounds(geo)
    Np = (COUT + 15) // 16 * 16
    TH = (OH + 1) // 2
    TW = (OW + 1) // 2
    tiles = TH * TW
    # the padded copy covers every tile's 4x4 patch: rows past the input are
    # zeros (the node's end padding, and one more row / column where an output
    # size is odd: those tiles' extra outputs are not written)
    Hp = 2 * TH + 2
    Wp = 2 * TW + 2
    TB = BLOCK_FLOATS // (NPOINT * (CIN + Np)) // 6 * 6
    TB = max(6, min(TB, 96, tiles))
    xt = np.empty(Hp * Wp * CIN, np.float32)
    v = np.empty(NPOINT * TB * CIN, np.float32)
    m = np.empty(NPOINT * TB * Np, np.float32)
    q = np.empty(4 * TB * Np, np.float32)
    pos = np.empty(TB, np.int64)
    edge = np.empty(TB, np.int64)
    vp, mp, wp = _fptr(v), _fptr(m), _fptr(w)
    ospace = OH * OW
    if not _tame(x, 0, N * CIN * H * W):
        # A NaN or infinity would reach every output of its 2x2 tiles through
        # the transforms (and inf - inf is NaN), where a direct sum makes NaN
        # or inf only the outputs whose window holds it: such inputs (and
        # huge ones) run on the panel kernel, whose weights follow the bias.
        p0 = BIAS + COUT
        g2 = geo.copy()
        g2[G_BIAS] = geo[G_NP] * NC * CIN * 9
        conv_panel(x, w[p0:], g2, y)
        return
    for n in range(N):
        _pad_copy_nhwc(x, n * CIN * H * W, CIN, 1, H, W, 0, PH, PW, 1, Hp, Wp, xt)
        ybase = n * COUT * ospace
        t0 = 0
        while t0 < tiles:
            tb = min(TB, tiles - t0)
            for r in range(tb):
                t = t0 + r
                _input_transform(xt, Wp, CIN, t // TW, t % TW, v, r, TB)
            m[:] = 0
            for p in range(NPOINT):
                panel_gemm(tb, CIN, Np, 0, Np, vp, p * TB * CIN, CIN, wp, p * CIN * Np, mp,
                           p * TB * Np, Np, 0)
            for r in range(tb):
                t = t0 + r
                th = t // TW
                tw = t - th * TW
                _output_transform(m, r, TB, Np, COUT, q, 4 * r * Np)
                pos[r] = 2 * th * OW + 2 * tw
                edge[r] = (2 * tw + 1 < OW) + 2 * (2 * th + 1 < OH)
            # Y is channels first: a channel at a time, so that the stores of
            # consecutive tiles go along its rows (stores a channel apart, as
            # a loop over the channels inside a tile writes them, took 80 of
            # 290 us on CRNN's second conv)
            for c in range(COUT):
                bv = w[BIAS + c]
                yc = ybase + c * ospace
                for r in range(tb):
                    e = edge[r]
                    qo = 4 * r * Np + c
                    yo = yc + pos[r]
                    y[yo] = _act(q[qo] + bv, ACT, clo, chi)
                    if e & 1:
                        y[yo + 1] = _act(q[qo + Np] + bv, ACT, clo, chi)
                    if e & 2:
                        y[yo + OW] = _act(q[qo + 2 * Np] + bv, ACT, clo, chi)
                        if e & 1:
                            y[yo + OW + 1] = _act(q[qo + 3 * Np] + bv, ACT, clo, chi)
            t0 += tb
