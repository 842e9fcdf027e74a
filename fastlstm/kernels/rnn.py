"""One simple (Elman) RNN time step: the recurrent product, then the activation.

ONNX equation (f = activation, Tanh by default; clip applied to its input):

    Ht = f(Xt*Wi + Ht-1*Ri + Wbi + Rbi)

Xt*W + Wb + Rb comes from the hoisted input GEMM.
"""
from numba import cfunc

from . import activations as act
from .common import (FP_ALPHA0, FP_BETA0, FP_CLIP, IP_ACT0, IP_H, IP_HAS_CLIP, IP_HP,
                     STEP_SIG, copy_run, write_y)
from .gemm import gemm_acc
from .. import config

GATES = 1


def ws_floats(batch, hp):
    """Scratch floats the RNN step needs for ``batch`` rows."""
    return batch * hp


@cfunc(STEP_SIG, nopython=True, cache=config.NUMBA_CACHE, fastmath=set(config.NUMBA_FASTMATH),
       error_model=config.NUMBA_ERROR_MODEL)
def rnn_step(nact, xp, xoff, R, rb, P, h_in, h_out, c, y, yoff, ws, ip, fp):
    H = ip[IP_H]
    Hp = ip[IP_HP]
    for b in range(nact):
        copy_run(xp, xoff[b], h_out, b * Hp, Hp)
    # h_out doubles as the accumulator: it does not alias h_in (the buffers alternate).
    gemm_acc(nact, H, Hp, h_in, 0, Hp, R, 0, h_out, 0, Hp)
    for b in range(nact):
        if ip[IP_HAS_CLIP] != 0:
            act.clip(h_out, b * Hp, Hp, fp[FP_CLIP])
        act.apply(ip[IP_ACT0], fp[FP_ALPHA0], fp[FP_BETA0], h_out, b * Hp, Hp)
        write_y(y, yoff[b], h_out, b * Hp, 0, H)
