"""One simple (Elman) RNN time step: the recurrent product, then the activation.

ONNX equation (f = activation, Tanh by default; clip applied to its input):

    Ht = f(Xt*Wi + Ht-1*Ri + Wbi + Rbi)

Xt*W + Wb + Rb comes from the hoisted input GEMM.
"""
from numba import cfunc

from . import activations as act
from .common import (FP_ALPHA0, FP_BETA0, FP_CLIP, IP_ACT0, IP_H, IP_HAS_CLIP, IP_HP,
                     IP_ORDER, IP_P0, IP_P1, STEP_SIG, TILE, copy_run, write_y)
from .gemm import panel_gemm
from .. import config

GATES = 1


def ws_floats(batch, hp):
    """Scratch floats the RNN step needs for ``batch`` rows."""
    return batch * hp


@cfunc(STEP_SIG, **config.jit_options())
def rnn_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    H = ip[IP_H]
    Hp = ip[IP_HP]
    j0 = ip[IP_P0] * TILE
    nj = ip[IP_P1] * TILE - j0
    for b in range(nact):
        copy_run(xp, xoff[b] + j0, h_out, b * Hp + j0, nj)
    # h_out doubles as the accumulator: it does not alias h_in (the buffers alternate).
    panel_gemm(nact, H, Hp, j0, j0 + nj, h_in, 0, Hp, R, 0, h_out, 0, Hp, ip[IP_ORDER])
    for b in range(nact):
        if ip[IP_HAS_CLIP] != 0:
            act.clip(h_out, b * Hp + j0, nj, fp[FP_CLIP])
        act.apply(ip[IP_ACT0], fp[FP_ALPHA0], fp[FP_BETA0], h_out, b * Hp + j0, nj)
        write_y(y, yoff[b], h_out, b * Hp + j0, j0, min(nj, H - j0))
