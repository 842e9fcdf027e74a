# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The batching front end: prepares a recurrent layer's run and drives its kernels.

Python hands over validated, contiguous float32 arrays and the addresses of the
Numba ``cfunc`` kernels (``fastlstm.kernels.registry``); everything from the
input GEMM to the last time step runs here in C with the GIL released, so
other Python threads keep running and no Python code sits in the time loop.

Variable lengths: batch rows are ordered by length, longest first (stable), so
at every step the rows still running are a prefix of the batch.  The step kernel
is given only that prefix: a finished sequence costs nothing, its state stays as
it was at its last step, and its Y rows keep the zeros they were allocated with.
In reverse direction each row walks back from its own last valid step, so only
the valid prefix of each sequence is reversed.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free
from libc.string cimport memcpy

cdef extern from "stdlib.h" nogil:
    void* aligned_alloc(size_t alignment, size_t size)

cnp.import_array()

ctypedef void (*step_fn)(int64_t, float*, int64_t*, float*, float*, float*, float*, float*,
                         float*, float*, int64_t*, float*, int64_t*, float*) noexcept nogil
ctypedef void (*gemm_fn)(int64_t, int64_t, int64_t, float*, float*, float*,
                         float*) noexcept nogil

cdef enum:
    TILE = 16       # fastlstm.config.TILE
    IP_BATCH = 7    # fastlstm.kernels.common.IP_BATCH

cdef inline float* fptr(cnp.ndarray a):
    return <float*> cnp.PyArray_DATA(a)

cdef inline int64_t* iptr(cnp.ndarray a):
    return <int64_t*> cnp.PyArray_DATA(a)


def tile_size():
    """The TILE this extension was built for (must equal fastlstm.config.TILE)."""
    return TILE


cdef void _order_by_length(int64_t B, int64_t T, int64_t* lens, int64_t* perm,
                           int64_t* slen, int64_t* count) noexcept nogil:
    """Stable counting sort of rows by length, longest first; O(B + T)."""
    cdef int64_t b, L, pos, total = 0
    for L in range(T + 1):
        count[L] = 0
    for b in range(B):
        count[lens[b]] += 1
    # start positions, longest first
    for L in range(T, -1, -1):
        pos = count[L]
        count[L] = total
        total += pos
    for b in range(B):
        L = lens[b]
        perm[count[L]] = b
        slen[count[L]] = L
        count[L] += 1


def run_recurrent(size_t step_addr, size_t gemm_addr, int gates_w, int64_t ws_floats,
                  cnp.ndarray x, int layout, object layer, list reverse, int64_t hidden,
                  object initial_h, object initial_c, object lens,
                  bint want_y, bint want_yh, bint want_yc, object xp_given=None):
    """Run one recurrent layer (all its directions).

    Parameters
    ----------
    step_addr, gemm_addr : addresses of the op's step kernel and of the input GEMM
    gates_w : gates per input panel; ws_floats : scratch floats for this batch
    x : float32 C-contiguous, [T, B, I] (layout 0) or [B, T, I] (layout 1)
    layer : a ``fastlstm.pack.PackedLayer``
    reverse : per direction, whether it runs backwards in time
    initial_h, initial_c : float32 C-contiguous [D, B, H] or None (zeros)
    lens : int64 C-contiguous [B] with values in [0, T], or None (all T)
    xp_given : float32 C-contiguous [T*B, D*G*Hp], the input projection already
        computed (by BLAS), or None to compute it here with the Numba GEMM

    Returns
    -------
    (Y, Y_h, Y_c), each None where not wanted.  Y is [T, D, B, H] (layout 0) or
    [B, T, D, H] (layout 1); Y_h/Y_c are [D, B, H] or [B, D, H].
    """
    cdef int64_t T, B, I, D, H = hidden, Hp, N, M
    if layout == 0:
        T, B = x.shape[0], x.shape[1]
    else:
        B, T = x.shape[0], x.shape[1]
    I = x.shape[2]
    cdef list dirs = layer.dirs
    D = len(dirs)
    Hp = (H + TILE - 1) // TILE * TILE
    N = Hp * gates_w
    M = T * B
    cdef int64_t ldx = D * N     # row stride of the projection

    cdef step_fn step = <step_fn> step_addr
    cdef gemm_fn gemm = <gemm_fn> gemm_addr

    # Scratch comes from one aligned C allocation per call (no numpy objects):
    # [xp (unless given) | two h buffers | c | ws] as floats, then the int64s.
    cdef bint have_xp = xp_given is not None
    cdef int64_t n_xp = 0 if have_xp else M * ldx
    cdef int64_t n_f = n_xp + 3 * B * Hp + ws_floats + 16
    cdef int64_t n_i = 4 * B + T + 2 + 8 + B
    cdef size_t f_bytes = ((n_f * sizeof(float) + 63) // 64) * 64
    cdef size_t i_bytes = ((n_i * sizeof(int64_t) + 63) // 64) * 64
    cdef char* mem = <char*> aligned_alloc(64, f_bytes + i_bytes)
    if mem == NULL:
        raise MemoryError(f"cannot allocate {f_bytes + i_bytes} bytes of scratch")
    cdef float* fbase = <float*> mem
    cdef int64_t* ibase = <int64_t*> (mem + f_bytes)
    cdef float* xpp = fptr(xp_given) if have_xp else fbase
    cdef float* hb = fbase + n_xp
    cdef float* cc = hb + 2 * B * Hp
    cdef float* wsp = cc + B * Hp
    cdef int64_t* perm = ibase
    cdef int64_t* slen = perm + B
    cdef int64_t* xoff = slen + B
    cdef int64_t* yoff = xoff + B
    cdef int64_t* count = yoff + B
    cdef int64_t* ipp = count + T + 2
    cdef int64_t* lensp = ipp + 8
    cdef int64_t b0
    if lens is None:
        for b0 in range(B):
            lensp[b0] = T
    else:
        lensp = iptr(lens)

    Y = Yh = Yc = None
    cdef float* y = xpp
    if want_y:
        Y = np.zeros((T, D, B, H) if layout == 0 else (B, T, D, H), np.float32)
        y = fptr(Y)
    cdef float* yh = NULL
    cdef float* yc = NULL
    if want_yh:
        Yh = np.zeros((D, B, H) if layout == 0 else (B, D, H), np.float32)
        yh = fptr(Yh)
    if want_yc:
        Yc = np.zeros((D, B, H) if layout == 0 else (B, D, H), np.float32)
        yc = fptr(Yc)
    cdef float* h0 = NULL
    cdef float* c0 = NULL
    if initial_h is not None:
        h0 = fptr(initial_h)
    if initial_c is not None:
        c0 = fptr(initial_c)

    cdef float* xx = fptr(x)
    cdef float* hin
    cdef float* hout
    cdef float* tmp
    cdef float* Rp
    cdef float* rb
    cdef float* Pp
    cdef float* fp
    cdef float* Wall = fptr(layer.W)
    cdef float* ball = fptr(layer.bias)
    cdef int64_t d, t, b, ob, tt, row, L, nact, maxlen, j, src, dst
    cdef bint rev

    try:
        with nogil:
            _order_by_length(B, T, lensp, perm, slen, count)
            if not have_xp:
                gemm(M, I, ldx, xx, Wall, ball, xpp)
        maxlen = slen[0] if B > 0 else 0

        for d in range(D):
            pd = dirs[d]
            rev = reverse[d]
            Rp = fptr(pd.R)
            rb = fptr(pd.rb)
            Pp = fptr(pd.P)
            fp = fptr(pd.fp)
            memcpy(ipp, iptr(pd.ip), 8 * sizeof(int64_t))
            ipp[IP_BATCH] = B
            with nogil:
                for b in range(2 * B * Hp):
                    hb[b] = 0
                for b in range(B * Hp):
                    cc[b] = 0
                for b in range(B):
                    ob = perm[b]
                    if h0 != NULL:
                        memcpy(hb + b * Hp, h0 + (d * B + ob) * H, H * sizeof(float))
                    if c0 != NULL:
                        memcpy(cc + b * Hp, c0 + (d * B + ob) * H, H * sizeof(float))
                hin = hb
                hout = hb + B * Hp
                nact = B
                for t in range(maxlen):
                    while nact > 0 and slen[nact - 1] <= t:
                        nact -= 1
                    for b in range(nact):
                        ob = perm[b]
                        tt = slen[b] - 1 - t if rev else t
                        if layout == 0:
                            row = tt * B + ob
                        else:
                            row = ob * T + tt
                        xoff[b] = row * ldx + d * N
                        if want_y:
                            if layout == 0:
                                yoff[b] = ((tt * D + d) * B + ob) * H
                            else:
                                yoff[b] = ((ob * T + tt) * D + d) * H
                        else:
                            yoff[b] = -1
                    step(nact, xpp, xoff, Rp, rb, Pp, hin, hout, cc, y, yoff, wsp, ipp, fp)
                    tmp = hin
                    hin = hout
                    hout = tmp
                # A row's final state is in the buffer its last step wrote: the
                # buffers alternate, so that is buffer (length % 2).  Rows of
                # length zero report zeros, as onnxruntime does.
                for b in range(B):
                    ob = perm[b]
                    L = slen[b]
                    if L == 0:
                        continue
                    dst = (d * B + ob) * H if layout == 0 else (ob * D + d) * H
                    if yh != NULL:
                        memcpy(yh + dst, hb + ((L % 2) * B + b) * Hp, H * sizeof(float))
                    if yc != NULL:
                        memcpy(yc + dst, cc + b * Hp, H * sizeof(float))
    finally:
        free(mem)
    return Y, Yh, Yc
