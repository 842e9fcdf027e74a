"""One GRU time step, recurrent GEMM fused with the gate math.

ONNX equations (f, g = activations; clip applied to every activation input):

    zt = f(Xt*Wz + Ht-1*Rz + Wbz + Rbz)
    rt = f(Xt*Wr + Ht-1*Rr + Wbr + Rbr)
    ht = g(Xt*Wh + (rt (.) Ht-1)*Rh + Rbh + Wbh)            linear_before_reset = 0
    ht = g(Xt*Wh + (rt (.) (Ht-1*Rh + Rbh)) + Wbh)          linear_before_reset = 1
    Ht = (1 - zt) (.) ht + zt (.) Ht-1

The input projection holds Xt*W + Wb (+ Rb for z and r, and for h too when
linear_before_reset = 0, where Rbh is simply added).

With linear_before_reset = 1 everything fuses per tile: R is packed with the
three gates (z, r, h) of a tile side by side and Rbh arrives through ``rb``.
With linear_before_reset = 0, (rt (.) Ht-1) needs every unit's rt before any
Ht-1*Rh product can start, so the step runs in two passes: z and r for all tiles
(panels with two gates), then the h gate (panels with one gate, after the z/r
panels in ``R``).  ``ws`` then also holds zt and rt (.) Ht-1 for every row.
"""
from numba import cfunc

from . import activations as act
from .common import (FP_ALPHA0, FP_ALPHA1, FP_BETA0, FP_BETA1, FP_CLIP, IP_ACT0, IP_ACT1,
                     IP_BATCH, IP_FLAG, IP_H, IP_HAS_CLIP, IP_HP, STEP_SIG, TILE, copy_run,
                     write_y)
from .gemm import recurrent_acc
from .. import config

GATES = 3


def ws_floats(batch, hp):
    """Scratch floats the GRU step needs for ``batch`` rows (both variants)."""
    return batch * (GATES * TILE + 2 * hp)


@cfunc(STEP_SIG, nopython=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
       error_model=config.NUMBA_ERROR_MODEL)
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
    one = lim * 0 + 1
    T = TILE
    GT = GATES * T
    ntiles = Hp // T
    if lbr:
        for p in range(ntiles):
            j0 = p * T
            for b in range(nact):
                copy_run(xp, xoff[b] + p * GT, ws, b * GT, 2 * T)
                copy_run(rb, j0, ws, b * GT + 2 * T, T)
            recurrent_acc(nact, h_in, 0, Hp, H, R, p * H * GT, GT, ws, 0)
            count = min(T, H - j0)
            for b in range(nact):
                a = b * GT
                s = b * Hp + j0
                if has_clip:
                    act.clip(ws, a, 2 * T, lim)
                act.apply(a_f, al_f, be_f, ws, a, 2 * T)
                x_h = xoff[b] + p * GT + 2 * T
                for jj in range(T):
                    ws[a + 2 * T + jj] = xp[x_h + jj] + ws[a + T + jj] * ws[a + 2 * T + jj]
                if has_clip:
                    act.clip(ws, a + 2 * T, T, lim)
                act.apply(a_g, al_g, be_g, ws, a + 2 * T, T)
                for jj in range(T):
                    z = ws[a + jj]
                    h_out[s + jj] = (one - z) * ws[a + 2 * T + jj] + z * h_in[s + jj]
                write_y(y, yoff[b], h_out, s, j0, count)
        return
    # linear_before_reset = 0: pass 1, z and r of every tile.
    zoff = Bcap * GT            # zt for row b, unit j at ws[zoff + b*Hp + j]
    rhoff = zoff + Bcap * Hp    # rt (.) Ht-1 likewise
    G2 = 2 * T
    for p in range(ntiles):
        j0 = p * T
        for b in range(nact):
            copy_run(xp, xoff[b] + p * GT, ws, b * G2, G2)
        recurrent_acc(nact, h_in, 0, Hp, H, R, p * H * G2, G2, ws, 0)
        for b in range(nact):
            a = b * G2
            s = b * Hp + j0
            if has_clip:
                act.clip(ws, a, G2, lim)
            act.apply(a_f, al_f, be_f, ws, a, G2)
            for jj in range(T):
                ws[zoff + s + jj] = ws[a + jj]
                ws[rhoff + s + jj] = ws[a + T + jj] * h_in[s + jj]
    # pass 2: the h gate from (rt (.) Ht-1) * Rh.
    rh_panels = ntiles * H * G2
    for p in range(ntiles):
        j0 = p * T
        for b in range(nact):
            copy_run(xp, xoff[b] + p * GT + 2 * T, ws, b * T, T)
        recurrent_acc(nact, ws, rhoff, Hp, H, R, rh_panels + p * H * T, T, ws, 0)
        count = min(T, H - j0)
        for b in range(nact):
            a = b * T
            s = b * Hp + j0
            if has_clip:
                act.clip(ws, a, T, lim)
            act.apply(a_g, al_g, be_g, ws, a, T)
            for jj in range(T):
                z = ws[zoff + s + jj]
                h_out[s + jj] = (one - z) * ws[a + jj] + z * h_in[s + jj]
            write_y(y, yoff[b], h_out, s, j0, count)
