"""What every recurrent step kernel shares: its C signature and parameter slots.

All three ops are called by the front end through one C signature::

    void step(int64 nact, float* xp, int64* xoff, float* R, float* rb, float* P,
              float* h_in, float* h_out, float* c, float* y, int64* yoff,
              float* ws, int64* ip, float* fp)

nact      active batch rows this step (rows are sorted by length, longest first,
          so the active rows are always a prefix)
xp, xoff  the input projection; row b's gates start at xp[xoff[b]]
R         packed recurrent weights Rt[H, G*Hp]; rb an op-specific bias (GRU's Rb_h)
P         packed peepholes (LSTM), zeros when the model has none
h_in      state of the previous step, rows Hp apart; h_out receives the new one
c         LSTM cell state, updated in place
y, yoff   output Y: row b's H values go to y[yoff[b]:], skipped when yoff[b] < 0
ws        scratch, at least ``ws_floats(op, B, Hp)`` floats
ip, fp    integer / float parameters, slots below

A call computes the hidden units of tiles ip[IP_P0] .. ip[IP_P1]-1 for every
active row, reading all of h_in; calls on disjoint tile ranges may run at once.
"""
from numba import njit, types

from .. import config

F32P = types.CPointer(types.float32)
I64P = types.CPointer(types.int64)

STEP_SIG = types.void(types.int64, F32P, I64P, F32P, F32P, F32P, F32P, F32P, F32P, F32P,
                      I64P, F32P, I64P, F32P)
GEMM_SIG = types.void(types.int64, types.int64, types.int64, types.int64, types.int64, F32P, F32P,
                      F32P, F32P)

# ip slots.  IP_P0..IP_P1 is the range of tiles this call computes (all of them
# unless the front end splits a step across threads); IP_PHASE selects a part of
# a two-pass step (GRU with linear_before_reset = 0): 0 both, 1 first, 2 second.
IP_H, IP_HP, IP_ACT0, IP_ACT1, IP_ACT2, IP_FLAG, IP_HAS_CLIP, IP_BATCH, IP_P0, IP_P1, \
    IP_PHASE = range(11)
IP_LEN = 11
# Not stored with the packed weights: the front end appends this slot to its
# copy of ip and sets it every step.  1: read the weight panels last to first.
# Alternating the order each step starts a step on the panels the previous
# one read last, which are still in L1/L2 (measured: 12.3 -> 11.2 us per step
# at H=256, where R is as large as the L2; the front end leaves it off when R
# is much larger than L2).  It changes no result: each output column is
# computed whole inside one panel.
IP_ORDER = IP_LEN
# fp slots: clip, then (alpha, beta) per activation
FP_CLIP, FP_ALPHA0, FP_BETA0, FP_ALPHA1, FP_BETA1, FP_ALPHA2, FP_BETA2 = range(7)
FP_LEN = 7

TILE = config.TILE

_jit = config.jit_options()


@njit(types.void(F32P, types.int64, F32P, types.int64, types.int64, types.int64), **_jit)
def write_y(y, yo, h, hoff, j0, count):
    """Copy ``count`` state values of one row into Y at element offset ``yo + j0``."""
    if yo >= 0:
        for jj in range(count):
            y[yo + j0 + jj] = h[hoff + jj]


@njit(types.void(F32P, types.int64, F32P, types.int64, types.int64), **_jit)
def copy_run(src, soff, dst, doff, n):
    """dst[doff:doff+n] = src[soff:soff+n]."""
    for i in range(n):
        dst[doff + i] = src[soff + i]
