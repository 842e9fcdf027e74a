"""One LSTM time step: the recurrent product, then all gate and cell math.

ONNX equations (f, g, h = activations; clip applied to every activation input;
peephole terms P* are zero when the model has none):

    it = f(Xt*Wi + Ht-1*Ri + Pi (.) Ct-1 + Wbi + Rbi)
    ft = f(Xt*Wf + Ht-1*Rf + Pf (.) Ct-1 + Wbf + Rbf)      (ft = 1 - it if input_forget)
    ct = g(Xt*Wc + Ht-1*Rc + Wbc + Rbc)
    Ct = ft (.) Ct-1 + it (.) ct
    ot = f(Xt*Wo + Ht-1*Ro + Po (.) Ct + Wbo + Rbo)
    Ht = ot (.) h(Ct)

Xt*W + Wb + Rb has already been computed for all steps by the input GEMM.  The
step copies each active row's projection into ``ws``, adds Ht-1*R to it in one
product over all gates, and then finishes the gates tile by tile while the row
is in L1.  Gate order inside a tile: i, o, f, c (ONNX order).
"""
import numpy as np
from numba import cfunc, types
from numba.extending import intrinsic

from . import activations as act
from .common import (FP_ALPHA0, FP_ALPHA1, FP_ALPHA2, FP_BETA0, FP_BETA1, FP_BETA2, FP_CLIP,
                     IP_ACT0, IP_ACT1, IP_ACT2, IP_FLAG, IP_H, IP_HAS_CLIP, IP_HP, IP_ORDER,
                     F32P, IP_P0, IP_P1, STEP_SIG, TILE, copy_run, tile_group, write_y)
from .gemm import panel_gemm
from .irvec import VL, V
from .. import config

# float32 1 (not made from a parameter: clip = inf would make it NaN)
_ONE = np.float32(1.0)

GATES = 4


def _make_gates(NT):
    """An intrinsic doing the default-activation gate and cell math of NT
    consecutive tiles of one row (the fast path below) as IR on vectors of
    VL units: every vector of every tile is an independent chain, and the
    out-of-order core overlaps them.  As one loop of TILE iterations per
    tile, LLVM's vector code ran the tile's ~3 transcendentals one after
    the other, waiting on their latency, one tile at a time.  Same
    formulas (``activations.ir_sigmoid`` / ``ir_tanh``), multiply-adds as
    FMAs: the results are bitwise those of that loop.  Measured against it
    (steps in a loop, one process, 21 interleaved rounds, three runs): H =
    128, batch 1: 1.00-1.05x (the step is mostly its product from L2); batch
    64: 1.02-1.07x.  The step takes 4 tiles at a time, then 2, then 1.

        gates(ws, a, P, j0, Hp, c, s, h): for tile q < NT, unit u < TILE:
        (ws[a + q*4T ...]: its gates i, o, f, c; c, h at s + q*T; P at j0 + q*T)
    """
    T = TILE

    @intrinsic
    def gates(typingctx, ws, a, P, j0, Hp, c, s, h):
        i64 = types.int64
        sig = types.void(F32P, i64, F32P, i64, i64, F32P, i64, F32P)

        def codegen(context, builder, signature, args):
            ws, a, P, j0, Hp, c, s, h = args
            v = V(builder, VL)
            Hp2 = builder.mul(Hp, v.int(2))
            for q in range(NT):
                for w in range(T // VL):
                    u = q * T + w * VL             # unit offset inside the tiles
                    g = v.at(a, q * GATES * T + w * VL)
                    pj = v.at(j0, u)
                    cs = v.at(s, u)
                    cp = v.load(c, cs)
                    gi = act.ir_sigmoid(v, v.fma(v.load(P, pj), cp, v.load(ws, g)))
                    gf = act.ir_sigmoid(v, v.fma(v.load(P, v.at(pj, Hp2)), cp,
                                                 v.load(ws, v.at(g, 2 * T))))
                    gc = act.ir_tanh(v, v.load(ws, v.at(g, 3 * T)))
                    cn = v.fma(gf, cp, builder.fmul(gi, gc))
                    v.store(cn, c, cs)
                    go = act.ir_sigmoid(v, v.fma(v.load(P, v.at(pj, Hp)), cn,
                                                 v.load(ws, v.at(g, T))))
                    v.store(builder.fmul(go, act.ir_tanh(v, cn)), h, cs)
            return context.get_dummy_value()

        return sig, codegen
    gates.__name__ = f"lstm_gates_{NT}"
    return gates


_gates1, _gates2, _gates4 = _make_gates(1), _make_gates(2), _make_gates(4)


def ws_floats(batch, hp):
    """Scratch floats the LSTM step needs for ``batch`` rows."""
    return batch * GATES * hp


@cfunc(STEP_SIG, **config.jit_options())
def lstm_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    H = ip[IP_H]
    Hp = ip[IP_HP]
    a_f = ip[IP_ACT0]
    a_g = ip[IP_ACT1]
    a_h = ip[IP_ACT2]
    coupled = ip[IP_FLAG] != 0
    has_clip = ip[IP_HAS_CLIP] != 0
    lim = fp[FP_CLIP]
    T = TILE
    GT = GATES * T
    N = GATES * Hp
    p0 = ip[IP_P0]
    p1 = ip[IP_P1]
    fast = (a_f == act.SIGMOID and a_g == act.TANH and a_h == act.TANH and not has_clip
            and not coupled)
    c0 = p0 * GT
    nc = (p1 - p0) * GT
    for b in range(nact):
        copy_run(xp, xoff[b] + c0, ws, b * N + c0, nc)
    panel_gemm(nact, H, N, c0, c0 + nc, h_in, 0, Hp, R, 0, ws, 0, N, ip[IP_ORDER])
    if fast:
        # default activations, no clip: 4, 2 or 1 tiles at a time (``_make_gates``)
        for b in range(nact):
            p = p0
            while p < p1:
                j0 = p * T
                a = b * N + p * GT
                s = b * Hp + j0
                nt = tile_group(p, p1)
                if nt == 4:
                    _gates4(ws, a, P, j0, Hp, c, s, h_out)
                elif nt == 2:
                    _gates2(ws, a, P, j0, Hp, c, s, h_out)
                else:
                    _gates1(ws, a, P, j0, Hp, c, s, h_out)
                write_y(y, yoff[b], h_out, s, j0, min(nt * T, H - j0))
                p += nt
        return
    for b in range(nact):
        for p in range(p0, p1):
            j0 = p * T
            a = b * N + p * GT
            s = b * Hp + j0
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
