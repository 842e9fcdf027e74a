"""Convs with one input channel per group and a small kernel, taps unrolled.

A text reader's first conv (a 3x3 over a one-channel image, 32 output
channels) is 9 multiply-adds per output: too few for a register tile to pay
its setup, and a loop that adds one tap at a time over an output row reads
and writes the row 9 times (``conv_rows`` and ``conv_direct``: 7 GMAC/s on
the CRNN's [1, 1, 32, 100] image).  Here each output row is computed with
every tap written out for the kernel's shape:

    y[ow] = act(b + w0 * r0[ow] + w1 * r0[ow + 1] + ... + w8 * r2[ow + 2])

(r0..r2 the padded input rows the taps read), 8 columns per vector, each
input vector loaded once for the taps and rows that read it and the output
written once.  The source is generated per kernel shape, activation and
pool and compiled once (``fastlstm.fuse.compile_kernel``, cached on disk
like the fused loops).

- No activation, Relu or Clip: the rows are LLVM IR on vectors
  (``row_kernel``), whole vectors over input rows padded for them (the
  last OW % 8 outputs of an unpooled row through a buffer), two output
  rows per pass when they are one input row apart.  Each output is one
  chain of FMAs from the bias (two chains for two rows, the kernel's first
  and last rows, added at the end).  Measured against the loop below, one
  process, 41 interleaved rounds, the CRNN's first conv with its Relu and
  2 x 2 pool: 1.30x at width 100, 1.20x at 400, 1.97x at 37.
- Sigmoid and SiLU: the row is a Python loop over its columns whose body
  sums every tap (each kernel row's taps in order, then the bias and the
  rows' sums pairwise), which LLVM vectorizes; rows are read and Y written
  through data pointers (``kernels.common.fptr``): indexed as array slices,
  each index got a negative-index test and the loop stayed scalar.

With a MaxPool fused (``pool``, windows of as many strides), the output
rows of a window row go to a buffer in L1 and only the windows' maxima are
stored: the CRNN's first conv, its Relu and its 2 x 2 pool in one pass
instead of a 400 KB output written and read back.  Windows two columns
wide are reduced 8 at a time (``pool_kernel``), the others by a loop, both
in MaxPool's order and rule; with the vector rows, window rows run outer
and channels inner, so a window row's input rows stay in L1.

Column stride and all dilations 1; any row stride; groups of one input
channel (depthwise convs included).  Each path sums in a fixed order, so
results are the same for every call, and differ from the other kernels' by
rounding only.
"""
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .. import fuse
from . import conv as K
from .common import F32P
from .irvec import VL, V

#: largest kernel (taps) written out
MAX_TAPS = 25

_ACT = {K.ACT_NONE: "{}", K.ACT_RELU: "relu({})", K.ACT_SIGMOID: "sigmoid({})",
        K.ACT_CLIP: "clip({}, lo, hi)", K.ACT_SILU: "{0} * sigmoid({0})"}

#: activations the vector rows (``row_kernel``) compute; the others take the
#: Python-loop rows of ``source``
VECTOR_ACTS = (K.ACT_NONE, K.ACT_RELU, K.ACT_CLIP)
_ROW_KERNELS = {}


def row_kernel(KH, KW, act, R=1):
    """An intrinsic computing ``nvec`` vectors of VL outputs of R consecutive
    conv rows (stride 1 between them when R > 1)::

        row(px, sb, Wp, w, woff, b, dst, doff, dstride, nvec, lo, hi):
        dst[doff + r*dstride + j] = act(b + sum_kh sum_kw w[woff + kh*KW + kw] *
                                            px[sb + (r + kh)*Wp + j + kw])
        for r < R, j < nvec * VL

    (act a K.ACT_* code: none, Relu or Clip with bounds lo, hi).  Written as
    LLVM IR on <VL x float> values, the weights splatted once: as a Python
    loop over the row's columns LLVM vectorized it, but left the last OW % 8
    columns to a scalar loop and reloaded spilled weights around every row
    (at the CRNN's 100 columns that doubled a row's time).  With R = 2 each
    input vector loaded feeds both rows (KH + 1 input rows read for two
    output rows instead of 2 KH: a vector of the 3 x 3 kernel took 8.2
    cycles in L1, the loads its bound).  The caller pads the input rows so
    that whole vectors can be read and pads ``dst`` (or takes the last vector
    through a buffer).  The sum is a chain of FMAs from the bias, taps in
    row-major order; with R = 2, two chains per output (the first (KH + 1) // 2
    kernel rows from the bias, the rest), added at the end: the same order for
    every output and call."""
    key = (KH, KW, act, R)
    got = _ROW_KERNELS.get(key)
    if got is not None:
        return got
    assert act in VECTOR_ACTS

    @intrinsic
    def row(typingctx, px, sb, Wp, w, woff, b, dst, doff, dstride, nvec, lo, hi):
        i64, f32 = types.int64, types.float32
        sig = types.void(F32P, i64, i64, F32P, i64, f32, F32P, i64, i64, i64, f32, f32)

        def codegen(context, builder, signature, args):
            px, sb, Wp, w, woff, b, dst, doff, dstride, nvec, lo, hi = args
            v = V(builder, VL)
            wv = [v.splat(builder.load(builder.gep(w, [v.at(woff, t)], inbounds=True)))
                  for t in range(KH * KW)]
            bv, lov, hiv = v.splat(b), v.splat(lo), v.splat(hi)
            rows = [v.at(sb, builder.mul(v.int(k), Wp)) for k in range(KH + R - 1)]
            # two chains per output row (the bias and the first kernel rows,
            # the last kernel rows), added at the end: shorter FMA latency
            # chains for the out-of-order core to overlap
            split = (KH + 1) // 2 if KH > 1 and R > 1 else KH
            with cgutils.for_range(builder, nvec) as loop:
                col = builder.mul(loop.index, v.int(VL))
                acc = [[bv, None] for _ in range(R)]
                for k in range(KH + R - 1):     # input row k feeds output rows r = k - kh
                    for kw in range(KW):
                        xv = v.load(px, v.at(rows[k], col, kw))
                        for r in range(R):
                            kh = k - r
                            if 0 <= kh < KH:
                                part = 0 if kh < split else 1
                                got = acc[r][part]
                                wk = wv[kh * KW + kw]
                                acc[r][part] = builder.fmul(wk, xv) if got is None else \
                                    v.fma(wk, xv, got)
                for r in range(R):
                    x = acc[r][0] if acc[r][1] is None else builder.fadd(acc[r][0], acc[r][1])
                    x = K.ir_act(v, x, act, lov, hiv)
                    v.store(x, dst, v.at(doff, builder.mul(v.int(r), dstride), col))
            return context.get_dummy_value()

        return sig, codegen
    row.__name__ = f"taps_row_{KH}x{KW}_{act}_{R}"
    _ROW_KERNELS[key] = row
    return row


def eligible(geo):
    """Whether the Conv of geometry ``geo`` is this kernel's."""
    return (geo[K.G_CGI] == 1 and geo[K.G_KD] == 1 and geo[K.G_SW] == 1
            and geo[K.G_DH] == 1 and geo[K.G_DW] == 1 and geo[K.G_SD] == 1
            and geo[K.G_KH] * geo[K.G_KW] <= MAX_TAPS and geo[K.G_OW] >= 8
            and geo[K.G_OD] == 1 and geo[K.G_D] == 1)


def source(KH, KW, act, pool=None):
    """The kernel for a KH x KW conv with activation ``act`` (a K.ACT_* code),
    and a MaxPool of ``pool`` = (rows, columns) windows with as many
    strides (None: none): the conv's output rows of a window row are then
    computed into a buffer that stays in L1, and the windows' maxima stored
    (MaxPool's rule of ``fastlstm.kernels.pool``: taps in row-major order,
    the first as it is, then one that is greater or NaN unless the max is
    NaN)."""
    taps = KH * KW
    PKH, PKW = pool or (1, 1)
    if act in VECTOR_ACTS:
        return _vector_source(KH, KW, act, pool)
    lines = fuse.header("conv with unrolled taps (fastlstm.kernels.conv_taps)",
                        "xp, w, BIAS, y, N, COUT, CGO, CIN, OH, OW, Hp, Wp, SH, lo, hi, rb") + [
        "    px, py, pr = fptr(xp), fptr(y), fptr(rb)",
        f"    POH, POW = OH // {PKH}, OW // {PKW}",
        "    for n in range(N):",
        "        for c in range(COUT):",
        "            base = (n * CIN + c // CGO) * Hp * Wp",
        "            b = w[BIAS + c]",
    ]
    for t in range(taps):
        lines.append(f"            w{t} = w[c * {taps} + {t}]")
    # a sum per kernel row, then the rows' sums added pairwise: a chain of
    # KW FMAs and log2(KH + 1) adds instead of one of KH*KW FMAs (whose
    # latency the loop waited on)
    rows = ["b"] + [" + ".join(f"w{kh * KW + kw} * px[s{kh} + ow + {kw}]" for kw in range(KW))
                    for kh in range(KH)]
    names = ["b"] + [f"t{kh}" for kh in range(KH)]
    while len(names) > 1:
        names = [f"({names[i]} + {names[i + 1]})" if i + 1 < len(names) else names[i]
                 for i in range(0, len(names), 2)]

    def row(indent, oh, dst, count):
        out = []
        for kh in range(KH):
            out.append(f"{indent}s{kh} = base + ({oh} * SH + {kh}) * Wp")
        out.append(f"{indent}for ow in range({count}):")
        for kh, expr in enumerate(rows[1:]):
            out.append(f"{indent}    t{kh} = {expr}")
        out.append(f"{indent}    v = {names[0]}")
        out.append(f"{indent}    {dst} = {_ACT[act].format('v')}")
        return out

    if pool is None:
        lines.append("            for oh in range(OH):")
        lines.append("                o = ((n * COUT + c) * OH + oh) * OW")
        lines += row("                ", "oh", "py[o + ow]", "OW")
        return "\n".join(lines) + "\n"
    lines.append("            for ph in range(POH):")
    for i in range(PKH):
        lines += row("                ", f"(ph * {PKH} + {i})", f"pr[{i} * OW + ow]",
                     f"POW * {PKW}")
    lines += _pool_lines(PKH, PKW, "OW")
    return "\n".join(lines) + "\n"


_POOL_KERNELS = {}


def pool_kernel(PKH):
    """An intrinsic reducing windows of PKH rows x 2 columns (strides the
    same) of a buffer, VL windows per vector::

        pool(pr, stride, py, o, ngroups):
        py[o + k] = max over rows i < PKH, columns j < 2 of pr[i*stride + 2k + j]
        for k < ngroups * VL

    in MaxPool's order and rule (``source``): taps in row-major order, the
    first as it is, then one that is greater or NaN unless the max is NaN.
    Each buffer row's 2*VL floats are loaded as two vectors and split into
    even and odd columns (a scalar loop with that rule stayed scalar)."""
    got = _POOL_KERNELS.get(PKH)
    if got is not None:
        return got

    @intrinsic
    def pool(typingctx, pr, stride, py, o, ngroups):
        i64 = types.int64
        sig = types.void(F32P, i64, F32P, i64, i64)

        def codegen(context, builder, signature, args):
            pr, stride, py, o, ngroups = args
            v = V(builder, VL)
            i32v = ir.VectorType(ir.IntType(32), VL)
            even = ir.Constant(i32v, [2 * k for k in range(VL)])
            odd = ir.Constant(i32v, [2 * k + 1 for k in range(VL)])
            with cgutils.for_range(builder, ngroups) as loop:
                col = builder.mul(loop.index, v.int(2 * VL))
                m = None
                for i in range(PKH):
                    at = v.at(builder.mul(v.int(i), stride), col)
                    a, b = v.load(pr, at), v.load(pr, v.at(at, VL))
                    for u in (builder.shuffle_vector(a, b, even),
                              builder.shuffle_vector(a, b, odd)):
                        if m is None:
                            m = u
                            continue
                        # keep m where it is NaN or u <= m, else u
                        keep = builder.or_(builder.fcmp_unordered("uno", m, m),
                                           builder.fcmp_ordered("<=", u, m))
                        m = builder.select(keep, m, u)
                v.store(m, py, v.at(o, builder.mul(loop.index, v.int(VL))))
            return context.get_dummy_value()

        return sig, codegen
    pool.__name__ = f"taps_pool_{PKH}x2"
    _POOL_KERNELS[PKH] = pool
    return pool


def _pool_lines(PKH, PKW, stride, vector=False):
    """The pool loop of a window row (``source``'s rule) over buffer rows
    ``stride`` floats apart; ``vector``: windows of two columns, groups of VL
    windows by ``pool_kernel`` (``_pool`` in the generated module), the rest
    by the loop."""
    lines = ["                o = ((n * COUT + c) * POH + ph) * POW"]
    if vector:
        lines += [f"                _pool(pr, {stride}, py, o, POW // {VL})",
                  f"                for pw in range(POW // {VL} * {VL}, POW):"]
    else:
        lines.append("                for pw in range(POW):")
    first = True
    for i in range(PKH):
        for j in range(PKW):
            tap = f"pr[{i} * {stride} + pw * {PKW} + {j}]"
            if first:
                lines.append(f"                    m = {tap}")
                first = False
            else:
                lines.append(f"                    u = {tap}")
                lines.append("                    m = u if (m == m and not u <= m) else m")
    lines.append("                    py[o + pw] = m")
    return lines


def _vector_source(KH, KW, act, pool):
    """``source`` for the activations ``row_kernel`` computes: each output
    row (with a pool: each conv row of a window row, into the buffer) as
    whole vectors of the row kernel; the input rows are padded for it
    (``TapsConv``); an unpooled row's last OW % 8 outputs go through the
    buffer."""
    taps = KH * KW
    lines = fuse.header("conv with unrolled taps (fastlstm.kernels.conv_taps)",
                        "xp, w, BIAS, y, N, COUT, CGO, CIN, OH, OW, Hp, Wp, SH, lo, hi, rb") + [
        "    px, py, pr, pw_ = fptr(xp), fptr(y), fptr(rb), fptr(w)",
    ]
    if pool:
        PKH, PKW = pool
        lines += [f"    POH, POW = OH // {PKH}, OW // {PKW}",
                  f"    NV = (POW * {PKW} + {VL - 1}) // {VL}",
                  f"    OWV = NV * {VL}"]
    else:
        lines += [f"    NF = OW // {VL}",
                  f"    REM = OW - NF * {VL}"]
    call = f"_row(px, {{}}, Wp, pw_, c * {taps}, b, {{}}, {{}}, 0, {{}}, lo, hi)"
    call2 = f"_row2(px, {{}}, Wp, pw_, c * {taps}, b, {{}}, {{}}, {{}}, {{}}, lo, hi)"
    if pool:
        # window rows outer, channels inner: a window row's input rows stay
        # in L1 for every channel (channels outer read the whole input from
        # L2 once per channel)
        lines += ["    for n in range(N):",
                  "        for ph in range(POH):",
                  "            for c in range(COUT):",
                  "                base = (n * CIN + c // CGO) * Hp * Wp",
                  "                b = w[BIAS + c]"]
        # the window's conv rows two at a time where the rows are 1 apart
        lines.append("                if SH == 1:")
        i = 0
        while i < PKH:
            start = f"base + (ph * {PKH} + {i}) * SH * Wp"
            if i + 1 < PKH:
                lines.append("                    " + call2.format(start, "pr", f"{i} * OWV",
                                                                   "OWV", "NV"))
                i += 2
            else:
                lines.append("                    " + call.format(start, "pr", f"{i} * OWV", "NV"))
                i += 1
        lines.append("                else:")
        for i in range(PKH):
            lines.append("                    " + call.format(
                f"base + (ph * {PKH} + {i}) * SH * Wp", "pr", f"{i} * OWV", "NV"))
        lines += _pool_lines(PKH, PKW, "OWV", vector=PKW == 2)
        src = "\n".join(lines) + "\n"
    else:
        lines += ["    for n in range(N):",
                  "        for c in range(COUT):",
                  "            base = (n * CIN + c // CGO) * Hp * Wp",
                  "            b = w[BIAS + c]",
                  "            oh = 0",
                  "            while oh < OH:",
                  "                o = ((n * COUT + c) * OH + oh) * OW",
                  "                s = base + oh * SH * Wp",
                  "                two = SH == 1 and oh + 1 < OH",
                  "                if two:",
                  "                    " + call2.format("s", "py", "o", "OW", "NF"),
                  "                else:",
                  "                    " + call.format("s", "py", "o", "NF"),
                  "                if REM:",
                  "                    if two:",
                  "                        " + call2.format(f"s + NF * {VL}", "pr", "0", f"{VL}",
                                                             "1"),
                  "                    else:",
                  "                        " + call.format(f"s + NF * {VL}", "pr", "0", "1"),
                  "                    for j in range(REM):",
                  f"                        py[o + NF * {VL} + j] = pr[j]",
                  "                        if two:",
                  f"                            py[o + OW + NF * {VL} + j] = pr[{VL} + j]",
                  "                oh += 2 if two else 1"]
        src = "\n".join(lines) + "\n"
    # the row kernel, made when the generated module is imported
    made = [f"_row = row_kernel({KH}, {KW}, {act})", f"_row2 = row_kernel({KH}, {KW}, {act}, 2)"]
    if pool and pool[1] == 2:
        made.append(f"_pool = pool_kernel({pool[0]})")
    imports = "from fastlstm.kernels.conv_taps import pool_kernel, row_kernel\n" + \
        "".join(line + "\n" for line in made)
    return src.replace("import math\n", "import math\n" + imports, 1)


class TapsConv:
    """The conv kernels' call ``(x, w, geo, y)`` for one kernel shape and
    activation; ``w`` in ONNX layout with the bias at geo[G_BIAS]
    (``conv_rows``'s weights)."""

    def __init__(self, KH, KW, act, pool=None):
        self.fn = fuse.compile_kernel(source(KH, KW, act, pool))
        self.pool = pool
        self.KW = KW
        self.vector = act in VECTOR_ACTS

    def __call__(self, x, w, geo, y):
        N, CIN, COUT, CGO = geo[K.G_N], geo[K.G_CIN], geo[K.G_COUT], geo[K.G_CGO]
        H, W, OH, OW = geo[K.G_H], geo[K.G_W], geo[K.G_OH], geo[K.G_OW]
        PH, PW = geo[K.G_PH], geo[K.G_PW]
        Hp, Wp = H + PH + geo[K.G_QH], W + PW + geo[K.G_QW]
        rbn = self.pool[0] * OW if self.pool else 1
        if self.vector:
            # rows read as whole vectors: padded to them (and the buffer)
            cols = OW // self.pool[1] * self.pool[1] if self.pool else OW
            nv = -(-cols // VL)
            Wp = max(Wp, nv * VL + self.KW - 1)
            rbn = self.pool[0] * nv * VL if self.pool else 2 * VL
        if geo[K.G_PADCOPY] or Wp != W + PW + geo[K.G_QW]:
            xp = np.zeros((N * CIN, Hp, Wp), np.float32)
            xp[:, PH:PH + H, PW:PW + W] = x.reshape(N * CIN, H, W)
            xp = xp.reshape(-1)
        else:
            xp = x
        lo, hi = K.clip_bounds(geo)
        rb = np.empty(rbn, np.float32)
        self.fn(xp, w, geo[K.G_BIAS], y, N, COUT, CGO, CIN, OH, OW, Hp, Wp, geo[K.G_SH],
                np.float32(lo), np.float32(hi), rb)
