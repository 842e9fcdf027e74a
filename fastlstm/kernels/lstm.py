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
from numba import cfunc

from . import activations as act
from .common import (FP_ALPHA0, FP_ALPHA1, FP_ALPHA2, FP_BETA0, FP_BETA1, FP_BETA2, FP_CLIP,
                     IP_ACT0, IP_ACT1, IP_ACT2, IP_FLAG, IP_H, IP_HAS_CLIP, IP_HP, IP_ORDER,
                     IP_P0, IP_P1, STEP_SIG, TILE, copy_run, write_y)
from .gemm import panel_gemm
from .. import config

# float32 1 (not made from a parameter: clip = inf would make it NaN)
_ONE = np.float32(1.0)

GATES = 4


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
    for b in range(nact):
        for p in range(p0, p1):
            j0 = p * T
            a = b * N + p * GT
            s = b * Hp + j0
            if fast:
                # Default activations, no clip: all the gate and cell math of a
                # unit in one loop of TILE iterations, which LLVM turns into one
                # pass of vector code (the general path below runs each
                # activation over a 16-float run, too short a loop for the
                # vectorizer: measured 2.4x slower at B=64, H=256).
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
