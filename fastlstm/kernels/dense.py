"""Dense layers of model heads: ``y = x @ W + b`` with W a constant, packed once.

The product runs on the recurrent layers' panel GEMM (``gemm.gemm_bias``):
W is padded to a multiple of 16 columns and packed in panels at load, and a
call is one compiled function.  numpy's ``dot`` (OpenBLAS here) costs more
at the sizes of exported heads: measured with ``OPENBLAS_NUM_THREADS=1``,
interleaved medians, on this AVX2 host: [1, 256] @ [256, 128] 6.5 vs 8.6 us,
[1, 128] @ [128, 95] 4.9 vs 8.8 us, [250, 256] @ [256, 29] 61 vs 91 us,
[100, 256] @ [256, 96] 82 vs 89 us (bias included in both).

Each output element is one chain of FMAs in k order, as in the recurrent
layers, so results do not depend on the number of rows.
"""
import numpy as np
from numba import njit, types

from .. import config
from .activations import fsigmoid, ftanh
from .gemm import gemm_bias, panel_gemm
from .scalar import relu

_F2 = types.float32[:, ::1]
_F1 = types.float32[::1]
#: Inputs may be read-only arrays (a feed from np.frombuffer, a view of one):
#: each kernel also has a signature taking them so (a call with writable
#: arrays still matches its own signature first).
_R2 = types.Array(types.float32, 2, "C", readonly=True)


@njit([types.void(x, _F1, _F1, _F2) for x in (_F2, _R2)], **config.jit_options())
def dense_rows(x, wp, bias, out):
    """out[M, Np] = x[M, K] @ W + bias, W packed by ``Dense`` (Np columns)."""
    M, K = x.shape
    Np = out.shape[1]
    gemm_bias(M, K, Np, 0, Np, x.ctypes, wp.ctypes, bias.ctypes, out.ctypes)


class Dense:
    """``w`` [K, N] float32 (and optional bias [N]) packed for ``dense_rows``.

    Calling it on x [..., K] (float32) returns a new C-contiguous [..., N].
    """

    def __init__(self, w, bias=None):
        from ..pack import to_panels
        K, N = w.shape
        self.k, self.n = K, N
        self.np_ = -(-N // 16) * 16
        wpad = np.zeros((K, self.np_), np.float32)
        wpad[:, :N] = w
        self.wp = to_panels(wpad)
        self.wp_source = w          # (codegen splits W's rows for a joined input)
        self.bias = np.zeros(self.np_, np.float32)
        if bias is not None:
            self.bias[:N] = bias

    def __call__(self, x):
        shape = x.shape[:-1] + (self.n,)
        x2 = x.reshape(-1, self.k)
        if not x2.flags.c_contiguous:
            x2 = np.ascontiguousarray(x2)
        out = np.empty((x2.shape[0], self.np_), np.float32)
        dense_rows(x2, self.wp, self.bias, out)
        if self.np_ != self.n:      # padded columns: a C-contiguous copy without them
            out = np.ascontiguousarray(out[:, :self.n])
        return out.reshape(shape)


# -- calls the specialised run makes itself (``fastlstm.codegen``): the output
# is written into a buffer the caller gives (reused between runs when it does
# not escape), so a call is one dispatch.  Measured on this AVX2 host (timeit
# in one process, a one-row 256 x 128 layer with bias): Dense.__call__ 4.7 us,
# dense_into with the buffers given 2.5 us (3.3 with its Tanh, on a busier
# run); the general run's np.tanh after it was another 1.1 us.

#: Activations ``dense_into`` applies to its output (an elementwise op whose
#: only input is the product, folded into it).
ACTS = {"Tanh": 1, "Relu": 2, "Sigmoid": 3}

_I = types.int64


@njit(types.void(_F2, _F2, _I), **config.jit_options(inline="always"))
def _finish(tmp, out, act):
    """out[:, :N] = act(tmp[:, :N]) (nothing when tmp is out and act is 0)."""
    M = out.shape[0]
    N = out.shape[1]
    if act == 0 and tmp.ctypes.data == out.ctypes.data:
        return
    for m in range(M):
        t = tmp[m]
        o = out[m]
        if act == 1:
            for n in range(N):
                o[n] = ftanh(t[n])
        elif act == 2:
            for n in range(N):
                o[n] = relu(t[n])
        elif act == 3:
            for n in range(N):
                o[n] = fsigmoid(t[n])
        else:
            for n in range(N):
                o[n] = t[n]


@njit([types.void(x, x, _F1, _F1, _F1, _F2, _F2, _I) for x in (_F2, _R2)],
      **config.jit_options())
def dense2_into(a, b, wpa, wpb, bias, tmp, out, act):
    """``dense_into`` of x = [a, b] joined along K (a Concat that only feeds
    the layer: its copy is not made): W's first Ka rows packed in ``wpa``,
    the rest in ``wpb``.  The second product adds to the first through
    ``tmp`` in k order, so each element is the same chain of FMAs as one
    product of the joined rows."""
    M, Ka = a.shape
    Kb = b.shape[1]
    Np = tmp.shape[1]
    gemm_bias(M, Ka, Np, 0, Np, a.ctypes, wpa.ctypes, bias.ctypes, tmp.ctypes)
    panel_gemm(M, Kb, Np, 0, Np, b.ctypes, 0, Kb, wpb.ctypes, 0, tmp.ctypes, 0, Np, 0)
    _finish(tmp, out, act)


@njit([types.void(x, _F1, _F1, _F2, _F2, _I) for x in (_F2, _R2)], **config.jit_options())
def dense_into(x, wp, bias, tmp, out, act):
    """out[M, N] = act(x[M, K] @ W + bias), W packed by ``Dense`` (Np columns).

    The product goes into ``tmp`` [M, Np]; when Np > N (padding) its first N
    columns are then copied to ``out``; ``tmp`` may be ``out`` when Np == N.
    ``act``: 0 none, else an ``ACTS`` code, computed as the fused loops'
    scalar forms (``fastlstm.kernels.scalar``)."""
    M, K = x.shape
    Np = tmp.shape[1]
    gemm_bias(M, K, Np, 0, Np, x.ctypes, wp.ctypes, bias.ctypes, tmp.ctypes)
    _finish(tmp, out, act)


@njit([types.void(x, x, _F2) for x in (_F2, _R2)], **config.jit_options())
def matmul_nn(a, b, out):
    """out[M, N] = a[M, K] @ b[K, N], both operands computed (an attention's
    weights times its memory): rows of b scaled and added, vectorized along N."""
    M, K = a.shape
    N = b.shape[1]
    for i in range(M):
        ar = a[i]
        o = out[i]
        for j in range(N):
            o[j] = np.float32(0)
        for k in range(K):
            av = ar[k]
            br = b[k]
            for j in range(N):
                o[j] += av * br[j]


#: matmul_nt's dot products may be summed in any order ("reassoc"): LLVM then
#: keeps several vector accumulators.  In k order (the other kernels' rule)
#: the loop stayed one scalar chain: [1, 128] x [60, 128].T took 3.9 us,
#: with reassociation 1.5 us (timeit through a lambda, dispatch included;
#: the asm has ymm FMAs on four accumulators).  Such a product of two
#: computed tensors is checked against onnxruntime within float32 rounding.
_REASSOC = config.jit_options(fastmath=set(config.NUMBA_FASTMATH) | {"reassoc"})


@njit([types.void(x, x, _F2) for x in (_F2, _R2)], **_REASSOC)
def matmul_nt(a, bt, out):
    """out[M, N] = a[M, K] @ bt[N, K].T (an attention's scores: the query
    times the transposed memory, read as rows): dot products of rows."""
    M, K = a.shape
    N = bt.shape[0]
    for i in range(M):
        ar = a[i]
        o = out[i]
        for j in range(N):
            br = bt[j]
            s = np.float32(0)
            for k in range(K):
                s += ar[k] * br[k]
            o[j] = s


# (typed at the first call: the arrays come in their own ranks, C-contiguous,
# so a call needs no flat views made for it: 0.2 us each)
@njit(**config.jit_options())
def concat2(out, a, b):
    """out = a then b, all C-contiguous (a Concat along its first axis of
    more than one element)."""
    o, x, y = out.ravel(), a.ravel(), b.ravel()
    na = x.size
    for i in range(na):
        o[i] = x[i]
    for i in range(y.size):
        o[na + i] = y[i]


@njit(**config.jit_options())
def concat3(out, a, b, c):
    """out = a, b then c (see ``concat2``)."""
    o, x, y, z = out.ravel(), a.ravel(), b.ravel(), c.ravel()
    na, nb = x.size, y.size
    for i in range(na):
        o[i] = x[i]
    for i in range(nb):
        o[na + i] = y[i]
    for i in range(z.size):
        o[na + nb + i] = z[i]


CONCATS = {2: concat2, 3: concat3}
