"""Convs with one input channel per group and a small kernel, taps unrolled.

A text reader's first conv (a 3x3 over a one-channel image, 32 output
channels) is 9 multiply-adds per output: too few for a register tile to pay
its setup, and a loop that adds one tap at a time over an output row reads
and writes the row 9 times (``conv_rows`` and ``conv_direct``: 7 GMAC/s on
the CRNN's [1, 1, 32, 100] image).  Here each output row is one loop over
its columns whose body sums every tap, written out for the kernel's shape:

    y[ow] = act(b + w0 * r0[ow] + w1 * r0[ow + 1] + ... + w8 * r2[ow + 2])

(r0..r2 the padded input rows the taps read), which LLVM vectorizes along
the columns, each input vector feeding one FMA and the output written once:
the rows are read and Y written through data pointers
(``kernels.common.fptr``): indexed as array slices, each index got a
negative-index test and the loop stayed scalar (read in the asm).
The source is generated per kernel shape and activation and compiled once
(``fastlstm.fuse.compile_kernel``, cached on disk like the fused loops).

With a MaxPool fused (``pool``, windows of as many strides), the output
rows of a window row go to a buffer in L1 and only the windows' maxima are
stored: the CRNN's first conv, its Relu and its 2 x 2 pool in one pass
instead of a 400 KB output written and read back.

Column stride and all dilations 1; any row stride; groups of one input
channel (depthwise convs included).  The sum runs in a fixed order (each
kernel row's taps in order, then the bias and the rows' sums pairwise), so
results are the same for every call, and differ from the other kernels' by
rounding only.
"""
import numpy as np

from .. import fuse
from . import conv as K

#: largest kernel (taps) written out
MAX_TAPS = 25

_ACT = {K.ACT_NONE: "{}", K.ACT_RELU: "relu({})", K.ACT_SIGMOID: "sigmoid({})",
        K.ACT_CLIP: "clip({}, lo, hi)", K.ACT_SILU: "{0} * sigmoid({0})"}


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
    lines.append("                o = ((n * COUT + c) * POH + ph) * POW")
    lines.append("                for pw in range(POW):")
    first = True
    for i in range(PKH):
        for j in range(PKW):
            tap = f"pr[{i} * OW + pw * {PKW} + {j}]"
            if first:
                lines.append(f"                    m = {tap}")
                first = False
            else:
                lines.append(f"                    u = {tap}")
                lines.append("                    m = u if (m == m and not u <= m) else m")
    lines.append("                    py[o + pw] = m")
    return "\n".join(lines) + "\n"


class TapsConv:
    """The conv kernels' call ``(x, w, geo, y)`` for one kernel shape and
    activation; ``w`` in ONNX layout with the bias at geo[G_BIAS]
    (``conv_rows``'s weights)."""

    def __init__(self, KH, KW, act, pool=None):
        self.fn = fuse.compile_kernel(source(KH, KW, act, pool))
        self.pool = pool

    def __call__(self, x, w, geo, y):
        N, CIN, COUT, CGO = geo[K.G_N], geo[K.G_CIN], geo[K.G_COUT], geo[K.G_CGO]
        H, W, OH, OW = geo[K.G_H], geo[K.G_W], geo[K.G_OH], geo[K.G_OW]
        PH, PW = geo[K.G_PH], geo[K.G_PW]
        Hp, Wp = H + PH + geo[K.G_QH], W + PW + geo[K.G_QW]
        if geo[K.G_PADCOPY]:
            xp = np.zeros((N * CIN, Hp, Wp), np.float32)
            xp[:, PH:PH + H, PW:PW + W] = x.reshape(N * CIN, H, W)
            xp = xp.reshape(-1)
        else:
            xp = x
        lo, hi = K.clip_bounds(geo)
        rb = np.empty(self.pool[0] * OW if self.pool else 1, np.float32)
        self.fn(xp, w, geo[K.G_BIAS], y, N, COUT, CGO, CIN, OH, OW, Hp, Wp, geo[K.G_SH],
                np.float32(lo), np.float32(hi), rb)
