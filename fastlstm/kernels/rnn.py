"""One simple (Elman) RNN time step, recurrent GEMM fused with the activation.

ONNX equation (f = activation, Tanh by default; clip applied to its input):

    Ht = f(Xt*Wi + Ht-1*Ri + Wbi + Rbi)

Xt*W + Wb + Rb comes from the hoisted input GEMM; per tile of TILE hidden units
the kernel adds Ht-1*R and applies f while the tile is in L1.
"""
from numba import cfunc

from . import activations as act
from .common import (FP_ALPHA0, FP_BETA0, FP_CLIP, IP_ACT0, IP_H, IP_HAS_CLIP, IP_HP,
                     STEP_SIG, TILE, copy_run, write_y)
from .gemm import recurrent_acc
from .. import config

GATES = 1


def ws_floats(batch, hp):
    """Scratch floats the RNN step needs for ``batch`` rows."""
    return batch * TILE


@cfunc(STEP_SIG, nopython=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
       error_model=config.NUMBA_ERROR_MODEL)
def rnn_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    H = ip[IP_H]
    Hp = ip[IP_HP]
    a_f = ip[IP_ACT0]
    has_clip = ip[IP_HAS_CLIP] != 0
    lim = fp[FP_CLIP]
    T = TILE
    for p in range(Hp // T):
        j0 = p * T
        for b in range(nact):
            copy_run(xp, xoff[b] + p * T, ws, b * T, T)
        recurrent_acc(nact, h_in, 0, Hp, H, R, p * H * T, T, ws, 0)
        count = min(T, H - j0)
        for b in range(nact):
            a = b * T
            if has_clip:
                act.clip(ws, a, T, lim)
            act.apply(a_f, fp[FP_ALPHA0], fp[FP_BETA0], ws, a, T)
            copy_run(ws, a, h_out, b * Hp + j0, T)
            write_y(y, yoff[b], h_out, b * Hp + j0, j0, count)
