# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The batching front end: prepares a recurrent layer's run and drives its kernels.

A ``Layer`` binds a packed layer to the addresses of its Numba ``cfunc``
kernels (``fastlstm.kernels.registry``) and to a thread team once; each
``Layer.run`` is handed validated float32 arrays, and everything from the input
GEMM to the last time step runs here in C with the GIL released, so other
Python threads keep running and no Python code sits in the time loop.

The input projection (x @ W + biases) is one GEMM over all steps, or, for a
one-direction layer not split by tiles, a GEMM per chunk of steps done just
before those steps, into a buffer about the size of L2 (for large B*T the whole
projection would go out to memory and come back).

Variable lengths: batch rows are ordered by length, longest first (stable), so
at every step the rows still running are a prefix of the batch.  The step kernel
is given only that prefix: a finished sequence costs nothing, its state stays as
it was at its last step, and its Y rows keep the zeros they were allocated with.
In reverse direction each row walks back from its own last valid step, so only
the valid prefix of each sequence is reversed.

Threads (a ``Team`` of persistent workers, see _team.h) split a layer in one
of three ways, chosen per call:
- directions: a bidirectional layer runs its two directions at once;
- rows: with at least as many rows as threads, each thread runs every
  n-th row (of the length order, so the work stays balanced) on its own;
- tiles: one row, one direction: each thread computes a range of hidden-unit
  tiles of every step, keeping its slice of R in its own L2, and the threads
  meet at a spin barrier after every step (two per step for GRU with
  linear_before_reset = 0).
Every split computes each output with the same operations in the same order,
so results do not depend on the thread count.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

cnp.import_array()

cdef extern from "stdlib.h" nogil:
    void* aligned_alloc(size_t alignment, size_t size)

cdef extern from "unistd.h" nogil:
    long sysconf(int name)
    int _SC_LEVEL2_CACHE_SIZE

cdef extern from "_team.h" nogil:
    ctypedef struct fl_team:
        pass
    ctypedef void (*fl_task)(void* arg, int tid, int nthreads) noexcept nogil
    fl_team* fl_team_create(int n)
    void fl_team_destroy(fl_team* t)
    int fl_team_acquire(fl_team* t)
    void fl_team_release(fl_team* t)
    void fl_team_run(fl_team* t, fl_task task, void* arg)
    void fl_barrier(fl_team* t, int* local_sense)
    int fl_team_size(fl_team* t)
    void fl_run_single(fl_task task, void* arg)
    unsigned int FL_GET_CSR()
    void FL_SET_CSR(unsigned int v)

ctypedef void (*step_fn)(int64_t, float*, int64_t*, float*, float*, float*, float*, float*,
                         float*, float*, int64_t*, float*, int64_t*, float*) noexcept nogil
ctypedef void (*gemm_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, float*, float*, float*,
                         float*) noexcept nogil

cdef enum:
    TILE = 16       # fastlstm.config.TILE
    PANEL = 64      # fastlstm.config.PANEL: columns of a packed weight panel
    MAXT = 64       # most threads a team may have
    SPLIT = PANEL // TILE   # tiles per unit of work when threads split a step
    MAXD = 2
    CHUNK_BYTES = 524288    # projection buffered per chunk of steps (see run_direction)
    KEEP_BYTES = 8388608    # largest scratch a Layer keeps between calls (see Layer.run)

cdef enum:
    MODE_SINGLE = 0
    MODE_DIRS = 1
    MODE_ROWS = 2
    MODE_TILES = 3

cdef struct IntParams:
    # A step kernel's integer parameter block: fastlstm.kernels.common.IP_RUN_DTYPE,
    # field by field (checked against it when fastlstm is imported: ip_layout).
    # All but ``order`` are stored with each packed direction.
    int64_t h, hp, act0, act1, act2, flag, has_clip, batch, p0, p1, phase, order


cdef IntParams _ip_probe
#: Bytes of the stored part of the block (every field before ``order``).
cdef size_t IP_STORED_BYTES = <size_t> (<char*> &_ip_probe.order - <char*> &_ip_probe)


cdef struct Carve:
    # Byte offsets of the parts of one thread's scratch, and its size: laid out
    # once (carve) for the allocation in Layer.run and the use in run_direction.
    size_t hb           # float [2, B, Hp]: h in and out, alternating
    size_t cc           # float [B, Hp]: LSTM cell state
    size_t ws           # float [ws_floats]: the step kernel's scratch
    size_t rows         # int64 [B]: the sorted rows this thread runs
    size_t xoff         # int64 [B]: per row, where its projection starts
    size_t yoff         # int64 [B]: per row, where its Y values go (-1: none)
    size_t ip           # IntParams
    size_t coff         # int64 [chunk, B]: projection offsets of a chunk of steps
    size_t xg           # float [chunk * B, I]: that chunk's gathered inputs
    size_t ring         # float [chunk * B, N]: their projections
    size_t size         # the whole, rounded up to 64 bytes


cdef inline size_t _take(size_t* at, size_t nbytes, size_t align) noexcept nogil:
    cdef size_t start = (at[0] + align - 1) // align * align
    at[0] = start + nbytes
    return start


cdef Carve carve(int64_t B, int64_t Hp, int64_t ws_floats, int64_t chunk, int64_t I,
                 int64_t N) noexcept nogil:
    cdef Carve v
    cdef size_t at = 0
    v.hb = _take(&at, 2 * B * Hp * sizeof(float), 64)
    v.cc = _take(&at, B * Hp * sizeof(float), sizeof(float))
    v.ws = _take(&at, ws_floats * sizeof(float), sizeof(float))
    v.rows = _take(&at, B * sizeof(int64_t), sizeof(int64_t))
    v.xoff = _take(&at, B * sizeof(int64_t), sizeof(int64_t))
    v.yoff = _take(&at, B * sizeof(int64_t), sizeof(int64_t))
    v.ip = _take(&at, sizeof(IntParams), sizeof(int64_t))
    v.coff = _take(&at, chunk * B * sizeof(int64_t), sizeof(int64_t))
    v.xg = _take(&at, chunk * B * I * sizeof(float), sizeof(float))
    v.ring = _take(&at, chunk * B * N * sizeof(float), sizeof(float))
    v.size = (at + 63) // 64 * 64
    return v


cdef long _l2 = sysconf(_SC_LEVEL2_CACHE_SIZE)
cdef long L2_BYTES = _l2 if _l2 > 0 else 1048576


cdef inline float* fptr(cnp.ndarray a):
    return <float*> cnp.PyArray_DATA(a)

cdef inline int64_t* iptr(cnp.ndarray a):
    return <int64_t*> cnp.PyArray_DATA(a)


cdef cnp.ndarray zeros3(cnp.npy_intp a, cnp.npy_intp b, cnp.npy_intp c):
    cdef cnp.npy_intp dims[3]
    dims[0] = a
    dims[1] = b
    dims[2] = c
    return cnp.PyArray_ZEROS(3, dims, cnp.NPY_FLOAT32, 0)


cdef cnp.ndarray zeros4(cnp.npy_intp a, cnp.npy_intp b, cnp.npy_intp c, cnp.npy_intp d):
    cdef cnp.npy_intp dims[4]
    dims[0] = a
    dims[1] = b
    dims[2] = c
    dims[3] = d
    return cnp.PyArray_ZEROS(4, dims, cnp.NPY_FLOAT32, 0)


def tile_size():
    """The TILE this extension was built for (must equal fastlstm.config.TILE)."""
    return TILE


def panel_width():
    """The PANEL this extension was built for (must equal fastlstm.config.PANEL)."""
    return PANEL


def ip_layout():
    """The IntParams struct as the compiler laid it out: ({field: byte offset},
    size in bytes), checked against kernels.common.IP_RUN_DTYPE at import."""
    cdef IntParams p
    cdef char* b = <char*> &p
    return ({"h": <char*> &p.h - b, "hp": <char*> &p.hp - b, "act0": <char*> &p.act0 - b,
             "act1": <char*> &p.act1 - b, "act2": <char*> &p.act2 - b,
             "flag": <char*> &p.flag - b, "has_clip": <char*> &p.has_clip - b,
             "batch": <char*> &p.batch - b, "p0": <char*> &p.p0 - b, "p1": <char*> &p.p1 - b,
             "phase": <char*> &p.phase - b, "order": <char*> &p.order - b},
            sizeof(IntParams))


cdef class Team:
    """A persistent team of ``n`` threads (the calling thread counts as one).

    One caller at a time uses a team; a second concurrent caller runs on its own
    thread alone, so sharing a session between threads is always safe.
    """
    cdef fl_team* team

    def __cinit__(self, int n):
        self.team = NULL
        if n > MAXT:
            n = MAXT
        if n >= 2:
            self.team = fl_team_create(n)

    @property
    def size(self):
        return fl_team_size(self.team)

    def run_task(self, size_t fn, size_t arg):
        """Run the C function at ``fn`` as ``fn(arg, tid, n)`` on every thread
        of the team (the caller is tid 0) without the GIL, or on the caller
        alone (tid 0 of 1) when another caller has the team or it has one
        thread; returns the number of threads that ran it.  Each thread runs
        it in the caller's floating-point mode (the team's own kernels flush
        denormals; a foreign task, such as a Winograd conv split over the
        team, then computes as it does when called directly)."""
        cdef ForeignTask t
        cdef int n = 1
        t.fn = <fl_task> fn
        t.arg = <void*> arg
        t.csr = FL_GET_CSR()
        if self.team != NULL and fl_team_acquire(self.team):
            n = fl_team_size(self.team)
            try:
                with nogil:
                    fl_team_run(self.team, _foreign, &t)
            finally:
                fl_team_release(self.team)
        else:
            with nogil:
                _foreign(&t, 0, 1)
        return n

    def __dealloc__(self):
        if self.team != NULL:
            fl_team_destroy(self.team)
            self.team = NULL


cdef struct ForeignTask:
    fl_task fn
    void* arg
    unsigned int csr        # the caller's MXCSR


cdef void _foreign(void* a, int tid, int n) noexcept nogil:
    """Run a ``ForeignTask`` on this thread in its caller's floating-point mode."""
    cdef ForeignTask* t = <ForeignTask*> a
    cdef unsigned int saved = FL_GET_CSR()
    FL_SET_CSR(t.csr)
    t.fn(t.arg, tid, n)
    FL_SET_CSR(saved)


cdef struct Kernels:
    # What a Layer fixes once: its kernels and the pointers to its packed weights.
    step_fn step
    gemm_fn gemm
    float* W
    float* bias
    float* R[MAXD]
    float* rb[MAXD]
    float* P[MAXD]
    float* fp[MAXD]
    int64_t* ip[MAXD]   # the stored part of each direction's IntParams
    bint rev[MAXD]
    bint gru2           # the step needs a barrier between its two passes


cdef struct Ctx:
    # One run: the layer's Kernels and everything that depends on the input.
    Kernels* k
    float* x
    int64_t insize
    int64_t T, B, D, H, Hp, N, ldx, layout, ws_floats
    bint want_y
    bint y_tbdh         # write Y as [T, B, D, H] (layout 0 only)
    float* xp
    float* y
    float* yh
    float* yc
    float* sh           # a stream's carried state, updated in place ([D, B, H])
    float* sc
    float* h0
    float* c0
    int64_t* perm
    int64_t* slen
    int64_t* lens       # per row, in batch order
    bint has_lens
    int mode
    fl_team* team
    char* tmem          # per-thread scratch, cv.size bytes each
    Carve cv            # its layout
    int64_t chunk       # steps projected at a time inside run_direction; 0: all upfront
    int64_t parity      # step t reads R's panels in reverse when (t + parity) is odd
    bint zig            # ... if at all (see Layer.run)


cdef void _order_by_length(int64_t B, int64_t T, int64_t* lens, int64_t* perm,
                           int64_t* slen, int64_t* count) noexcept nogil:
    """Stable counting sort of rows by length, longest first; O(B + T)."""
    cdef int64_t b, L, pos, total = 0
    for L in range(T + 1):
        count[L] = 0
    for b in range(B):
        count[lens[b]] += 1
    for L in range(T, -1, -1):
        pos = count[L]
        count[L] = total
        total += pos
    for b in range(B):
        L = lens[b]
        perm[count[L]] = b
        slen[count[L]] = L
        count[L] += 1


cdef void run_direction(Ctx* c, int d, int64_t r0, int64_t rstep, int64_t p0, int64_t p1,
                        char* mem, bint shared, int tid, int* sense) noexcept nogil:
    """Run direction ``d`` over sorted rows r0, r0+rstep, ... for tiles [p0, p1).

    ``shared``: every thread of the team runs this same call on its own tile
    range; state buffers then live in thread 0's scratch and the threads meet at
    the team barrier after each step.  ``sense`` is the thread's barrier state,
    kept across every barrier of the job.
    """
    cdef int64_t B = c.B, Hp = c.Hp, H = c.H, T = c.T, D = c.D
    cdef int64_t nsub = 0, i, t, sb, ob, L, tt, row, nact, maxlen
    cdef char* smem = c.tmem if shared else mem     # state owner
    cdef float* hb = <float*> (smem + c.cv.hb)
    cdef float* cc = <float*> (smem + c.cv.cc)
    cdef float* ws = <float*> (smem + c.cv.ws)
    cdef int64_t* rows = <int64_t*> (mem + c.cv.rows)
    cdef int64_t* xoff = <int64_t*> (mem + c.cv.xoff)
    cdef int64_t* yoff = <int64_t*> (mem + c.cv.yoff)
    cdef IntParams* ip = <IntParams*> (mem + c.cv.ip)
    # chunked projection: slot offsets, gathered inputs, projected rows
    cdef int64_t* coff = <int64_t*> (mem + c.cv.coff)
    cdef float* xg = <float*> (mem + c.cv.xg)
    cdef float* ring = <float*> (mem + c.cv.ring)
    cdef float* xsrc = ring if c.chunk > 0 else c.xp
    cdef int64_t t0 = 0, tc, na, nrows
    cdef float* hin
    cdef float* hout
    cdef float* tmp
    cdef Kernels* k = c.k
    cdef bint rev = k.rev[d]

    i = r0
    while i < B:
        rows[nsub] = i
        nsub += 1
        i += rstep
    memcpy(ip, k.ip[d], IP_STORED_BYTES)
    ip.batch = nsub
    ip.p0 = p0
    ip.p1 = p1
    ip.phase = 0
    ip.order = 0
    if not shared or tid == 0:
        memset(hb, 0, 2 * B * Hp * sizeof(float))
        memset(cc, 0, B * Hp * sizeof(float))
        for i in range(nsub):
            ob = c.perm[rows[i]]
            if c.h0 != NULL:
                memcpy(hb + i * Hp, c.h0 + (d * B + ob) * H, H * sizeof(float))
            if c.c0 != NULL:
                memcpy(cc + i * Hp, c.c0 + (d * B + ob) * H, H * sizeof(float))
    if shared:
        fl_barrier(c.team, sense)
    hin = hb
    hout = hb + nsub * Hp
    nact = nsub
    maxlen = c.slen[rows[0]] if nsub > 0 else 0
    for t in range(maxlen):
        while nact > 0 and c.slen[rows[nact - 1]] <= t:
            nact -= 1
        if c.chunk > 0 and (t == 0 or t - t0 == c.chunk):
            # Project the inputs of steps [t, t + chunk) now, into a buffer
            # that is still in cache when the steps read it: gather those
            # steps' x rows, then one GEMM over all of them.
            t0 = t
            nrows = 0
            na = nact
            for tc in range(t, min(t + c.chunk, maxlen)):
                while na > 0 and c.slen[rows[na - 1]] <= tc:
                    na -= 1
                for i in range(na):
                    sb = rows[i]
                    ob = c.perm[sb]
                    tt = c.slen[sb] - 1 - tc if rev else tc
                    row = tt * B + ob if c.layout == 0 else ob * T + tt
                    memcpy(xg + nrows * c.insize, c.x + row * c.insize,
                           c.insize * sizeof(float))
                    coff[(tc - t) * B + i] = nrows * c.N
                    nrows += 1
            if nrows > 0:
                k.gemm(nrows, c.insize, c.N, 0, c.N, xg, k.W, k.bias, ring)
        for i in range(nact):
            sb = rows[i]
            ob = c.perm[sb]
            tt = c.slen[sb] - 1 - t if rev else t
            row = tt * B + ob if c.layout == 0 else ob * T + tt
            if c.chunk > 0:
                xoff[i] = coff[(t - t0) * B + i]
            else:
                xoff[i] = row * c.ldx + d * c.N
            if c.want_y:
                if c.y_tbdh:
                    yoff[i] = ((tt * B + ob) * D + d) * H
                elif c.layout == 0:
                    yoff[i] = ((tt * D + d) * B + ob) * H
                else:
                    yoff[i] = ((ob * T + tt) * D + d) * H
            else:
                yoff[i] = -1
        ip.order = (t + c.parity) & 1 if c.zig else 0
        if shared and k.gru2:
            ip.phase = 1
            k.step(nact, xsrc, xoff, k.R[d], k.rb[d], k.P[d], hin, hout, cc, c.y, yoff, ws,
                   <int64_t*> ip, k.fp[d])
            fl_barrier(c.team, sense)
            ip.phase = 2
        k.step(nact, xsrc, xoff, k.R[d], k.rb[d], k.P[d], hin, hout, cc, c.y, yoff, ws,
               <int64_t*> ip, k.fp[d])
        if shared:
            fl_barrier(c.team, sense)
        tmp = hin
        hin = hout
        hout = tmp
    if shared and tid != 0:
        return
    # A row's final state is in the buffer its last step wrote: the buffers
    # alternate, so that is buffer (length % 2).  Rows of length zero report
    # zeros, as onnxruntime does, and leave a carried state as it was.
    for i in range(nsub):
        sb = rows[i]
        ob = c.perm[sb]
        L = c.slen[sb]
        if L == 0:
            continue
        row = (d * B + ob) * H if c.layout == 0 else (ob * D + d) * H
        if c.yh != NULL:
            memcpy(c.yh + row, hb + ((L % 2) * nsub + i) * Hp, H * sizeof(float))
        if c.yc != NULL:
            memcpy(c.yc + row, cc + i * Hp, H * sizeof(float))
        row = (d * B + ob) * H
        if c.sh != NULL:
            memcpy(c.sh + row, hb + ((L % 2) * nsub + i) * Hp, H * sizeof(float))
        if c.sc != NULL:
            memcpy(c.sc + row, cc + i * Hp, H * sizeof(float))


cdef inline void project(Ctx* c, int64_t row, int64_t count, int64_t c0,
                         int64_t c1) noexcept nogil:
    """Input projection of rows [row, row + count) of x into xp, columns [c0, c1)."""
    c.k.gemm(count, c.insize, c.ldx, c0, c1, c.x + row * c.insize, c.k.W, c.k.bias,
             c.xp + row * c.ldx)


cdef void project_part(Ctx* c, int part, int nparts, int64_t c0, int64_t c1) noexcept nogil:
    """Project part ``part`` of ``nparts`` of the rows (columns [c0, c1)).

    Rows past a sequence's end are padding: with lengths given only the valid
    rows are projected (runs of consecutive valid rows go to the GEMM together).
    """
    cdef int64_t M = c.T * c.B, m0, m1, b, t, run
    if c1 <= c0:
        return
    if not c.has_lens:
        m0 = M * part // nparts
        m1 = M * (part + 1) // nparts
        if m1 > m0:
            project(c, m0, m1 - m0, c0, c1)
    elif c.layout == 1:
        for b in range(c.B * part // nparts, c.B * (part + 1) // nparts):
            if c.lens[b] > 0:
                project(c, b * c.T, c.lens[b], c0, c1)
    else:
        for t in range(c.T * part // nparts, c.T * (part + 1) // nparts):
            b = 0
            while b < c.B:
                if c.lens[b] <= t:
                    b += 1
                    continue
                run = b
                while run < c.B and c.lens[run] > t:
                    run += 1
                project(c, t * c.B + b, run - b, c0, c1)
                b = run


cdef void run_task(void* arg, int tid, int n) noexcept nogil:
    """What thread ``tid`` of ``n`` does in the chosen mode."""
    cdef Ctx* c = <Ctx*> arg
    cdef char* mem = c.tmem + tid * c.cv.size
    cdef int64_t ntiles = c.Hp // TILE, p0, p1, nchunks, gt = c.N // (c.Hp // TILE)
    cdef int d
    cdef int sense = 0
    # Whole chunks of SPLIT tiles, so that every thread's columns start on a
    # 64-column weight panel (see fastlstm.kernels.gemm).
    nchunks = (ntiles + SPLIT - 1) // SPLIT
    p0 = min(ntiles, SPLIT * (nchunks * tid // n))
    p1 = min(ntiles, SPLIT * (nchunks * (tid + 1) // n))
    # The input projection of all steps and directions (unless run_direction
    # projects chunk by chunk).  Split by tiles, each thread projects its own
    # columns of every row, which is all its steps read: no barrier, and each
    # thread reads only its share of W.  Otherwise threads split the rows.
    if c.chunk > 0:
        pass
    elif c.mode == MODE_TILES:
        project_part(c, 0, 1, p0 * gt, p1 * gt)
    else:
        project_part(c, tid, n, 0, c.ldx)
        if n > 1:
            fl_barrier(c.team, &sense)
    if c.mode == MODE_SINGLE:
        for d in range(c.D):
            run_direction(c, d, 0, 1, 0, ntiles, mem, False, 0, &sense)
    elif c.mode == MODE_DIRS:
        d = tid
        while d < c.D:
            run_direction(c, d, 0, 1, 0, ntiles, mem, False, tid, &sense)
            d += n
    elif c.mode == MODE_ROWS:
        for d in range(c.D):
            run_direction(c, d, tid, n, 0, ntiles, mem, False, tid, &sense)
    else:
        for d in range(c.D):
            run_direction(c, d, 0, 1, p0, p1, mem, True, tid, &sense)


cdef class Layer:
    """A packed recurrent layer bound to its kernels and thread team: what every
    run of one node shares, looked up once (``run`` is the per-call part).

    Parameters
    ----------
    step_addr, gemm_addr : addresses of the op's step kernel and of the input GEMM
    gates_w : gates per direction in the projection
    ws_per_row : the step kernel's scratch floats per batch row
    layer : a ``fastlstm.pack.PackedLayer`` (kept alive by this object)
    reverse : per direction, whether it runs backwards in time
    team : threads to split the work over, or None
    two_phase : the step needs a barrier between its two passes (GRU lbr=0)
    y_tbdh : write Y as [T, B, D, H] instead of [T, D, B, H] (layout 0): the
        Transpose that exporters put after a bidirectional layer, done for free
    """
    cdef object packed
    cdef Team team_obj
    cdef fl_team* ft
    cdef Kernels k
    cdef int64_t ws_per_row, H, Hp, N, D, isz
    cdef bint y_tbdh
    # Scratch kept from one call to the next (see run): its bytes, and whether
    # a call is using it now (set and cleared with the GIL held).
    cdef char* kept
    cdef size_t kept_bytes
    cdef bint kept_busy
    # What ``direct`` passes to every run (set_direct), and its panel-order parity.
    cdef int d_layout, d_nout, d_parity
    cdef bint d_want_y, d_want_yh, d_want_yc
    cdef int64_t d_min_work

    def __cinit__(self, size_t step_addr, size_t gemm_addr, int gates_w, int64_t ws_per_row,
                  object layer, list reverse, Team team=None, bint two_phase=False,
                  bint y_tbdh=False):
        cdef list dirs = layer.dirs
        cdef int d
        if len(dirs) > MAXD or len(dirs) < 1 or len(reverse) != len(dirs):
            raise ValueError("one or two directions")
        self.kept = NULL
        self.kept_bytes = 0
        self.kept_busy = False
        self.set_direct(0, True, True, True, 0, 3)
        self.d_parity = 0
        self.packed = layer
        self.team_obj = team
        self.ft = team.team if team is not None else NULL
        self.k.step = <step_fn> step_addr
        self.k.gemm = <gemm_fn> gemm_addr
        self.ws_per_row = ws_per_row
        self.H = layer.hidden
        self.isz = layer.input_size
        self.Hp = (self.H + TILE - 1) // TILE * TILE
        self.N = self.Hp * gates_w
        self.D = len(dirs)
        self.k.gru2 = two_phase
        self.y_tbdh = y_tbdh
        self.k.W = fptr(layer.W)
        self.k.bias = fptr(layer.bias)
        for d in range(self.D):
            pd = dirs[d]
            self.k.R[d] = fptr(pd.R)
            self.k.rb[d] = fptr(pd.rb)
            self.k.P[d] = fptr(pd.P)
            self.k.fp[d] = fptr(pd.fp)
            self.k.ip[d] = iptr(pd.ip)
            self.k.rev[d] = reverse[d]

    def set_direct(self, int layout, bint want_y, bint want_yh, bint want_yc, int64_t min_work,
                   int n_out):
        """Fix the arguments of ``direct`` (those of ``run`` of the same names; it
        returns the first ``n_out`` of the outputs)."""
        self.d_layout = layout
        self.d_want_y, self.d_want_yh, self.d_want_yc = want_y, want_yh, want_yc
        self.d_min_work = min_work
        self.d_nout = n_out

    def direct(self, cnp.ndarray x, object h0=None, object c0=None):
        """``run(x, initial_h=h0, initial_c=c0)`` with the arguments fixed by
        ``set_direct``, for callers that have checked their inputs (the
        specialised executor): a one-step call spends its time in the kernels,
        not in passing a dozen arguments by name (measured at H = 16, where the
        kernels take a fraction of a microsecond, best of 9 x 20000 calls on the
        shared AVX2 machine: 1.7-3.5 us per call through a Python closure
        calling ``run``, 0.8-1.4 us here).  h0, c0: ndarrays or None,
        [D, B, H] (layout 0) or [B, D, H] (layout 1), any strides.  The panel
        order alternates between calls (``run``'s ``parity``)."""
        h0 = _state_arg(h0, self.d_layout)
        c0 = _state_arg(c0, self.d_layout)
        self.d_parity ^= 1
        r = self._run(x, self.d_layout, h0, c0, None, self.d_want_y, self.d_want_yh,
                      self.d_want_yc, self.d_min_work, None, None, self.d_parity)
        return r if self.d_nout == 3 else r[:self.d_nout]

    def run(self, cnp.ndarray x, *, int layout=0, object initial_h=None,
            object initial_c=None, object lens=None, bint want_y=True, bint want_yh=True,
            bint want_yc=True, int64_t min_work=0, object state_h=None, object state_c=None,
            int parity=0):
        """Run the layer (all its directions) on ``x``; everything else by name.

        x : float32, [T, B, I] (layout 0) or [B, T, I] (layout 1); copied if not
            C-contiguous
        initial_h, initial_c : float32 C-contiguous [D, B, H] or None (zeros)
        lens : int64 C-contiguous [B] with values in [0, T], or None (all T)
        min_work : multiply-adds per step below which threads are not worth waking
        state_h, state_c : float32 C-contiguous [D, B, H] or None: a stream's
            state, overwritten in place with each row's final state (rows with
            no steps keep theirs).  They may be the same arrays as initial_h /
            initial_c: every thread reads its rows' initial state before it
            writes any.
        parity : step t reads the weight panels last to first when t + parity
            is odd; a caller making one-step calls alternates it between calls,
            so a call starts where the previous one ended, on weights still in
            cache (kernels.common.IP_RUN_DTYPE, field order).

        Returns (Y, Y_h, Y_c), each None where not wanted.  Y is [T, D, B, H]
        (layout 0, or [T, B, D, H] with y_tbdh) or [B, T, D, H] (layout 1);
        Y_h/Y_c are [D, B, H] or [B, D, H].
        """
        return self._run(x, layout, initial_h, initial_c, lens, want_y, want_yh, want_yc,
                         min_work, state_h, state_c, parity)

    cdef tuple _run(self, cnp.ndarray x, int layout, object initial_h, object initial_c,
                    object lens, bint want_y, bint want_yh, bint want_yc, int64_t min_work,
                    object state_h, object state_c, int parity):
        cdef Ctx c
        cdef int64_t T, B, I, D = self.D, H = self.H, Hp = self.Hp, N = self.N, M, b0
        if not cnp.PyArray_IS_C_CONTIGUOUS(x):
            x = np.ascontiguousarray(x)
        if layout == 0:
            T, B = x.shape[0], x.shape[1]
        else:
            B, T = x.shape[0], x.shape[1]
        I = x.shape[2]
        if I != self.isz:
            raise ValueError(f"X has input size {I}, the layer expects {self.isz}")
        M = T * B
        cdef int64_t ws_floats = self.ws_per_row * B
        # choose how to split the work
        cdef fl_team* ft = self.ft
        cdef int n = fl_team_size(ft)
        cdef int mode = MODE_SINGLE
        cdef int64_t work = D * B * N * H
        # (directions meet once per call, not at every step: their split also
        # pays when a call's work is 16 times the minimum, whatever a step's)
        if ft != NULL and T > 0 and B > 0:
            if D == 2 and (work >= min_work or work * T >= 16 * min_work):
                mode = MODE_DIRS
            elif work < min_work:
                pass
            elif B >= n:
                mode = MODE_ROWS
            elif (Hp // TILE + SPLIT - 1) // SPLIT >= n:
                mode = MODE_TILES
        cdef bint acquired = False
        if mode != MODE_SINGLE:
            acquired = fl_team_acquire(ft)
            if not acquired:
                mode = MODE_SINGLE      # another caller has the team: run alone
        if mode == MODE_SINGLE:
            n = 1

        # The input projection: all steps upfront, or, for one direction not split
        # by tiles, a chunk of steps at a time, sized to stay in L2 (for large
        # B*T the whole projection would go out to memory and back: measured 8%
        # of batch64's time).
        # A chunk's inputs and projections fill about CHUNK_BYTES, but a chunk has
        # at least 64 rows, so that its GEMM reuses each weight panel enough.
        cdef int64_t chunk = 0, rows_per_thread = (B + n - 1) // n
        if D == 1 and mode != MODE_TILES and T > 0 and B > 0:
            chunk = CHUNK_BYTES // ((N + I) * sizeof(float) * rows_per_thread)
            chunk = max(chunk, (64 + rows_per_thread - 1) // rows_per_thread)
            chunk = min(chunk, T)
        # Scratch comes from one aligned C allocation per call (no numpy objects):
        # the projection, then per thread: two h buffers, c, the kernel's ws, the
        # int64 row tables and the chunk buffers; then the shared int64 tables.
        cdef int64_t n_xp = 0 if chunk > 0 else M * D * N
        cdef size_t xp_bytes = ((n_xp * sizeof(float) + 63) // 64) * 64
        cdef Carve cv = carve(B, Hp, ws_floats, chunk, I, N)
        cdef size_t tstride = cv.size
        cdef size_t shared_bytes = ((3 * B + T + 2) * sizeof(int64_t) + 63) // 64 * 64
        cdef size_t total = xp_bytes + n * tstride + shared_bytes
        # The scratch of the last call is kept and reused when it is large
        # enough and no other call holds it: a one-step call (a stream chunk)
        # then allocates nothing but its outputs (measured at H = 16: 1.1-2.0
        # -> 0.9-1.5 us per run; malloc, free and malloc_consolidate were 10%
        # of the call), and a sequence's projection buffer does not come back
        # from the kernel as fresh pages to fault in.
        cdef float* sh = NULL if state_h is None else fptr(state_h)   # (may raise: before
        cdef float* sc = NULL if state_c is None else fptr(state_c)   # the scratch is taken)
        cdef bint use_kept = not self.kept_busy and total <= KEEP_BYTES
        cdef char* mem
        if use_kept:
            if total > self.kept_bytes:
                free(self.kept)
                self.kept_bytes = 0
                self.kept = <char*> aligned_alloc(64, total)
                if self.kept != NULL:
                    self.kept_bytes = total
            mem = self.kept
            self.kept_busy = mem != NULL
        else:
            mem = <char*> aligned_alloc(64, total)
        if mem == NULL:
            if acquired:
                fl_team_release(ft)
            raise MemoryError(f"cannot allocate {total} bytes of scratch")
        cdef int64_t* ibase = <int64_t*> (mem + xp_bytes + n * tstride)
        cdef int64_t* lensp = ibase + 2 * B
        cdef int64_t* count = lensp + B

        Y = Yh = Yc = None
        c.k = &self.k
        c.T, c.B, c.D, c.H, c.Hp, c.N = T, B, D, H, Hp, N
        c.ldx = D * N
        c.layout = layout
        c.ws_floats = ws_floats
        c.want_y = want_y
        c.y_tbdh = self.y_tbdh and layout == 0
        c.xp = <float*> mem
        c.insize = I
        c.x = fptr(x)
        c.perm = ibase
        c.slen = ibase + B
        c.y = c.xp
        c.yh = NULL
        c.yc = NULL
        c.sh = sh
        c.sc = sc
        c.h0 = NULL
        c.c0 = NULL
        c.mode = mode
        c.team = ft
        c.tmem = mem + xp_bytes
        c.cv = cv
        c.chunk = chunk
        c.parity = parity
        # Alternating the panel order helps when the R a thread reads each step is
        # about the size of its L2 (measured: -9% per step at 1 MiB, -5% at 1.56
        # MiB) and costs a little when R streams from L3 (+2% at 4 MiB, where
        # backward jumps between panels defeat the prefetcher).
        c.zig = (H * N * sizeof(float)) // (n if mode == MODE_TILES else 1) <= 2 * L2_BYTES
        try:
            if want_y:
                if c.y_tbdh:
                    Y = zeros4(T, B, D, H)
                elif layout == 0:
                    Y = zeros4(T, D, B, H)
                else:
                    Y = zeros4(B, T, D, H)
                c.y = fptr(Y)
            if want_yh:
                Yh = zeros3(D, B, H) if layout == 0 else zeros3(B, D, H)
                c.yh = fptr(Yh)
            if want_yc:
                Yc = zeros3(D, B, H) if layout == 0 else zeros3(B, D, H)
                c.yc = fptr(Yc)
            if initial_h is not None:
                c.h0 = fptr(initial_h)
            if initial_c is not None:
                c.c0 = fptr(initial_c)
            c.lens = lensp
            c.has_lens = lens is not None
            if lens is None:
                for b0 in range(B):
                    lensp[b0] = T
            else:
                memcpy(lensp, iptr(lens), B * sizeof(int64_t))
            with nogil:
                _order_by_length(B, T, lensp, c.perm, c.slen, count)
                if mode == MODE_SINGLE:
                    fl_run_single(run_task, &c)
                else:
                    fl_team_run(ft, run_task, &c)
        finally:
            if acquired:
                fl_team_release(ft)
            if use_kept:
                self.kept_busy = False
            else:
                free(mem)
        return Y, Yh, Yc

    def __dealloc__(self):
        free(self.kept)
        self.kept = NULL


cdef object _state_arg(object s, int layout):
    """A state given to ``Layer.direct`` as ``run`` takes it: [D, B, H], C-contiguous."""
    if s is None:
        return None
    if layout == 1:
        s = s.transpose(1, 0, 2)
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> s):
        s = np.ascontiguousarray(s)
    return s


def pack_sequences(list seqs, int64_t input_size, bint batch_first):
    """Copy sequences of shape [T_i, input_size] into one zero-padded batch.

    Returns (x, lens): x is [T_max, B, input_size] (or [B, T_max, input_size]
    with ``batch_first``) float32 and lens int64 [B], in the order given.
    The caller checks dtype (float32), contiguity and shapes.
    """
    cdef int64_t B = len(seqs), b
    cdef int64_t T = 0, L, t
    cdef cnp.ndarray lens = np.empty(B, np.int64)
    cdef int64_t* lp = iptr(lens)
    cdef cnp.ndarray s
    for b in range(B):
        L = (<cnp.ndarray> seqs[b]).shape[0]
        lp[b] = L
        if L > T:
            T = L
    cdef cnp.ndarray x = np.zeros((B, T, input_size) if batch_first else (T, B, input_size),
                                  np.float32)
    cdef float* xp = fptr(x)
    cdef float* src
    for b in range(B):
        s = seqs[b]
        src = fptr(s)
        L = lp[b]
        if batch_first:
            memcpy(xp + b * T * input_size, src, L * input_size * sizeof(float))
        else:
            for t in range(L):
                memcpy(xp + (t * B + b) * input_size, src + t * input_size,
                       input_size * sizeof(float))
    return x, lens
