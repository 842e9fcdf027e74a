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
ws        scratch, at least ``desc.ws_floats(B, Hp)`` floats (the op's descriptor)
ip, fp    integer / float parameter blocks, fields below (IP_RUN_DTYPE, FP_DTYPE)

A call computes the hidden units of tiles ip.p0 .. ip.p1-1 for every
active row, reading all of h_in; calls on disjoint tile ranges may run at once.
"""
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from .. import config

F32P = types.CPointer(types.float32)
I64P = types.CPointer(types.int64)

STEP_SIG = types.void(types.int64, F32P, I64P, F32P, F32P, F32P, F32P, F32P, F32P, F32P,
                      I64P, F32P, I64P, F32P)
GEMM_SIG = types.void(types.int64, types.int64, types.int64, types.int64, types.int64, F32P, F32P,
                      F32P, F32P)

#: The integer parameter block of a step kernel (``ip``), one int64 per field, in
#: this order; stored with each packed direction (``pack.PackedDirection.ip``).
#: p0 .. p1 is the range of tiles a call computes (all of them unless the front
#: end splits a step across threads); phase selects a part of a two-pass step
#: (GRU with linear_before_reset = 0): 0 both, 1 first, 2 second; batch is the
#: rows the scratch is laid out for.
IP_DTYPE = np.dtype([("h", np.int64), ("hp", np.int64), ("act0", np.int64),
                     ("act1", np.int64), ("act2", np.int64), ("flag", np.int64),
                     ("has_clip", np.int64), ("batch", np.int64), ("p0", np.int64),
                     ("p1", np.int64), ("phase", np.int64)])
#: The block the kernels are called with: the stored one, then ``order``, which
#: the front end sets every step.  1: read the weight panels last to first.
#: Alternating the order each step starts a step on the panels the previous
#: one read last, which are still in L1/L2 (measured: 12.3 -> 11.2 us per step
#: at H=256, where R is as large as the L2; the front end leaves it off when R
#: is much larger than L2).  It changes no result: each output column is
#: computed whole inside one panel.  The front end's ``IntParams`` struct is
#: checked against this dtype when fastlstm is imported (``_extension``).
IP_RUN_DTYPE = np.dtype(IP_DTYPE.descr + [("order", np.int64)])
#: The float parameter block (``fp``), one float32 per field: clip, then
#: (alpha, beta) per activation.
FP_DTYPE = np.dtype([("clip", np.float32), ("alpha0", np.float32), ("beta0", np.float32),
                     ("alpha1", np.float32), ("beta1", np.float32), ("alpha2", np.float32),
                     ("beta2", np.float32)])


def _slots(dtype):
    return {name: dtype.fields[name][1] // dtype.fields[name][0].itemsize
            for name in dtype.names}


# Slot numbers, for the kernels (which index the blocks as arrays).
_IP, _FP = _slots(IP_RUN_DTYPE), _slots(FP_DTYPE)
IP_H, IP_HP, IP_ACT0, IP_ACT1, IP_ACT2 = (_IP[k] for k in ("h", "hp", "act0", "act1", "act2"))
IP_FLAG, IP_HAS_CLIP, IP_BATCH, IP_P0, IP_P1 = (_IP[k] for k in ("flag", "has_clip", "batch",
                                                                   "p0", "p1"))
IP_PHASE, IP_ORDER = _IP["phase"], _IP["order"]
IP_LEN = len(IP_DTYPE.names)
FP_CLIP, FP_ALPHA0, FP_BETA0, FP_ALPHA1, FP_BETA1, FP_ALPHA2, FP_BETA2 = (
    _FP[k] for k in FP_DTYPE.names)
FP_LEN = len(FP_DTYPE.names)


def abi():
    """What a packed layer's arrays mean to the kernels: tile and panel sizes and
    the parameter blocks' fields.  A ``.fastlstm`` file records it and is
    refused by a fastlstm whose kernels read another."""
    return {"tile": config.TILE, "panel": config.PANEL, "ip": list(IP_DTYPE.names),
            "fp": list(FP_DTYPE.names)}


def new_params():
    """Zeroed parameter blocks for one direction: (ip record, fp record).  Their
    ``.view`` as int64 / float32 arrays is what is stored and passed on."""
    return np.zeros((), IP_DTYPE), np.zeros((), FP_DTYPE)


TILE = config.TILE

_jit = config.jit_options()


@njit(types.void(F32P, types.int64, F32P, types.int64, types.int64, types.int64), **_jit)
def write_y(y, yo, h, hoff, j0, count):
    """Copy ``count`` state values of one row into Y at element offset ``yo + j0``."""
    if yo >= 0:
        for jj in range(count):
            y[yo + j0 + jj] = h[hoff + jj]


@njit(types.int64(types.int64, types.int64), **_jit)
def tile_group(p, p1):
    """How many tiles from tile p on (of those before p1) a step's gate
    intrinsic takes at once: 4, 2 or 1 (``lstm._make_gates``)."""
    return 4 if p + 3 < p1 else 2 if p + 1 < p1 else 1


@njit(types.void(F32P, types.int64, F32P, types.int64, types.int64), **_jit)
def copy_run(src, soff, dst, doff, n):
    """dst[doff:doff+n] = src[soff:soff+n]."""
    for i in range(n):
        dst[doff + i] = src[soff + i]


@intrinsic
def fptr(typingctx, arr):
    """The data pointer of a float32 array of any layout.  Indexing it has no
    negative-index wrap-around test, which an index Numba cannot prove
    non-negative (an offset plus a loop counter) costs per element and which
    keeps LLVM from vectorizing the loop (measured 4x on a strided loop)."""
    sig = F32P(arr)

    def codegen(context, builder, signature, args):
        return context.make_array(signature.args[0])(context, builder, args[0]).data
    return sig, codegen
