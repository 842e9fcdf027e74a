"""One GRU time step: recurrent products, then the gate math.

ONNX equations (f, g = activations; clip applied to every activation input):

    zt = f(Xt*Wz + Ht-1*Rz + Wbz + Rbz)
    rt = f(Xt*Wr + Ht-1*Rr + Wbr + Rbr)
    ht = g(Xt*Wh + (rt (.) Ht-1)*Rh + Rbh + Wbh)            linear_before_reset = 0
    ht = g(Xt*Wh + (rt (.) (Ht-1*Rh + Rbh)) + Wbh)          linear_before_reset = 1
    Ht = (1 - zt) (.) ht + zt (.) Ht-1

The input projection holds Xt*W + Wb, plus Rb for z and r, and for h too when
linear_before_reset = 0 (where Rbh is simply added).

linear_before_reset = 1: one product Ht-1*[Rz Rr Rh] (R packed with the three
gates of a tile side by side) into rows that start as [xz xr Rbh]; the gate
math then finishes each tile.

linear_before_reset = 0: (rt (.) Ht-1) needs every unit's rt before its product
with Rh can start, so there are two products: Ht-1*[Rz Rr] (packed first in R),
then (rt (.) Ht-1)*Rh (packed after it).  ``ws`` holds, per row, the z/r
accumulators, zt, rt (.) Ht-1 and the h accumulator.
"""
import numpy as np
from numba import cfunc, types
from numba.extending import intrinsic

from . import activations as act
from .common import (FP_ALPHA0, FP_ALPHA1, FP_BETA0, FP_BETA1, FP_CLIP, IP_ACT0, IP_ACT1,
                     IP_BATCH, IP_FLAG, IP_H, IP_HAS_CLIP, IP_HP, IP_ORDER, IP_P0, IP_P1,
                     IP_PHASE, STEP_SIG, TILE, F32P, copy_run, tile_group, write_y)
from .gemm import panel_gemm
from .irvec import VL, V
from .. import config

# float32 1 (not made from a parameter: clip = inf would make it NaN)
_ONE = np.float32(1.0)

GATES = 3


def _make_gates(NT):
    """linear_before_reset = 1 with the default activations, NT consecutive
    tiles of one row as IR on vectors of VL units (see
    ``lstm._make_gates``: independent chains the out-of-order core overlaps,
    where a loop per tile waited on each unit's sigmoid -> tanh latency;
    same formulas, bitwise the same results; measured against that loop,
    steps in a loop, one process, 21 interleaved rounds, three runs: H =
    128, batch 1: 0.99-1.04x; batch 64: 1.04-1.09x)::

        gates(ws, a, xp, xh, hin, s, h): for tile q < NT, unit u < TILE:
        z = sigmoid(ws[a + q*3T + u]), r = sigmoid(ws[a + q*3T + T + u]),
        n = tanh(xp[xh + q*3T + u] + r * ws[a + q*3T + 2T + u]),
        h[s + q*T + u] = (1 - z) * n + z * hin[s + q*T + u]
    """
    T = TILE

    @intrinsic
    def gates(typingctx, ws, a, xp, xh, hin, s, h):
        i64 = types.int64
        sig = types.void(F32P, i64, F32P, i64, F32P, i64, F32P)

        def codegen(context, builder, signature, args):
            ws, a, xp, xh, hin, s, h = args
            v = V(builder, VL)
            for q in range(NT):
                for w in range(T // VL):
                    g = v.at(a, q * GATES * T + w * VL)
                    hs = v.at(s, q * T + w * VL)
                    z = act.ir_sigmoid(v, v.load(ws, g))
                    r = act.ir_sigmoid(v, v.load(ws, v.at(g, T)))
                    n = act.ir_tanh(v, v.fma(r, v.load(ws, v.at(g, 2 * T)),
                                             v.load(xp, v.at(xh, q * GATES * T + w * VL))))
                    hv = v.fma(z, v.load(hin, hs), builder.fmul(builder.fsub(v.const(1.0), z), n))
                    v.store(hv, h, hs)
            return context.get_dummy_value()

        return sig, codegen
    gates.__name__ = f"gru_gates_{NT}"
    return gates


_gates1, _gates2, _gates4 = _make_gates(1), _make_gates(2), _make_gates(4)


def ws_floats(batch, hp):
    """Scratch floats the GRU step needs for ``batch`` rows (both variants)."""
    return batch * 5 * hp


@cfunc(STEP_SIG, **config.jit_options())
def gru_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    H = ip[IP_H]
    Hp = ip[IP_HP]
    a_f = ip[IP_ACT0]
    a_g = ip[IP_ACT1]
    lbr = ip[IP_FLAG] != 0
    has_clip = ip[IP_HAS_CLIP] != 0
    Bcap = ip[IP_BATCH]
    lim = fp[FP_CLIP]
    al_f = fp[FP_ALPHA0]
    be_f = fp[FP_BETA0]
    al_g = fp[FP_ALPHA1]
    be_g = fp[FP_BETA1]
    T = TILE
    GT = GATES * T
    p0 = ip[IP_P0]
    p1 = ip[IP_P1]
    phase = ip[IP_PHASE]
    fast = a_f == act.SIGMOID and a_g == act.TANH and not has_clip
    if lbr:
        N = GATES * Hp
        for b in range(nact):
            for p in range(p0, p1):
                copy_run(xp, xoff[b] + p * GT, ws, b * N + p * GT, 2 * T)
                copy_run(rb, p * T, ws, b * N + p * GT + 2 * T, T)
        panel_gemm(nact, H, N, p0 * GT, p1 * GT, h_in, 0, Hp, R, 0, ws, 0, N, ip[IP_ORDER])
        if fast:
            # default activations, no clip: 4, 2 or 1 tiles at a time (``_make_gates``)
            for b in range(nact):
                p = p0
                while p < p1:
                    j0 = p * T
                    a = b * N + p * GT
                    s = b * Hp + j0
                    x_h = xoff[b] + p * GT + 2 * T
                    nt = tile_group(p, p1)
                    if nt == 4:
                        _gates4(ws, a, xp, x_h, h_in, s, h_out)
                    elif nt == 2:
                        _gates2(ws, a, xp, x_h, h_in, s, h_out)
                    else:
                        _gates1(ws, a, xp, x_h, h_in, s, h_out)
                    write_y(y, yoff[b], h_out, s, j0, min(nt * T, H - j0))
                    p += nt
            return
        for b in range(nact):
            for p in range(p0, p1):
                j0 = p * T
                a = b * N + p * GT
                s = b * Hp + j0
                x_h = xoff[b] + p * GT + 2 * T
                if has_clip:
                    act.clip(ws, a, 2 * T, lim)
                act.apply(a_f, al_f, be_f, ws, a, 2 * T)
                for jj in range(T):
                    ws[a + 2 * T + jj] = xp[x_h + jj] + ws[a + T + jj] * ws[a + 2 * T + jj]
                if has_clip:
                    act.clip(ws, a + 2 * T, T, lim)
                act.apply(a_g, al_g, be_g, ws, a + 2 * T, T)
                for jj in range(T):
                    z = ws[a + jj]
                    h_out[s + jj] = (_ONE - z) * ws[a + 2 * T + jj] + z * h_in[s + jj]
                write_y(y, yoff[b], h_out, s, j0, min(T, H - j0))
        return
    # linear_before_reset = 0.  Phase 1: z and r; phase 2 (which needs every
    # unit's rt (.) Ht-1, so a split step synchronises in between): the h gate.
    N2 = 2 * Hp
    zoff = Bcap * N2            # zt of row b, unit j at ws[zoff + b*Hp + j]
    rhoff = zoff + Bcap * Hp    # rt (.) Ht-1, likewise
    hoff = rhoff + Bcap * Hp    # h-gate accumulator, likewise
    j0 = p0 * T
    nj = (p1 - p0) * T
    if phase != 2:
        for b in range(nact):
            for p in range(p0, p1):
                copy_run(xp, xoff[b] + p * GT, ws, b * N2 + p * 2 * T, 2 * T)
                copy_run(xp, xoff[b] + p * GT + 2 * T, ws, hoff + b * Hp + p * T, T)
        panel_gemm(nact, H, N2, 2 * j0, 2 * (j0 + nj), h_in, 0, Hp, R, 0, ws, 0, N2,
                   ip[IP_ORDER])
        for b in range(nact):
            for p in range(p0, p1):
                a = b * N2 + p * 2 * T
                s = b * Hp + p * T
                if fast:
                    for jj in range(T):
                        ws[zoff + s + jj] = act.fsigmoid(ws[a + jj])
                        ws[rhoff + s + jj] = act.fsigmoid(ws[a + T + jj]) * h_in[s + jj]
                    continue
                if has_clip:
                    act.clip(ws, a, 2 * T, lim)
                act.apply(a_f, al_f, be_f, ws, a, 2 * T)
                for jj in range(T):
                    ws[zoff + s + jj] = ws[a + jj]
                    ws[rhoff + s + jj] = ws[a + T + jj] * h_in[s + jj]
    if phase == 1:
        return
    panel_gemm(nact, H, Hp, j0, j0 + nj, ws, rhoff, Hp, R, H * N2, ws, hoff, Hp, ip[IP_ORDER])
    for b in range(nact):
        s = b * Hp + j0
        if has_clip:
            act.clip(ws, hoff + s, nj, lim)
        act.apply(a_g, al_g, be_g, ws, hoff + s, nj)
        for j in range(nj):
            z = ws[zoff + s + j]
            h_out[s + j] = (_ONE - z) * ws[hoff + s + j] + z * h_in[s + j]
        write_y(y, yoff[b], h_out, s, j0, min(nj, H - j0))
