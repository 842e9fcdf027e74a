"""Helpers for kernels written as LLVM IR on vectors of float32.

Some loops are written as IR (``numba.extending.intrinsic``) rather than
Python: where LLVM's vectorizer leaves them scalar (several pointers into one
buffer it cannot prove apart) or keeps one chain of dependent operations at a
time where independent chains would overlap.  The intrinsics build their IR
with ``V``: vector type, int64 constants, loads and stores at element offsets
of a float32 pointer, splats, the FMA intrinsic, Relu and Clip; ``transpose8``
transposes 8 vectors of 8 floats.
"""
from llvmlite import ir
from numba.core import cgutils

#: float32 lanes of the IR kernels' vectors (one AVX2 register; half an
#: AVX-512 one, which LLVM handles as well)
VL = 8


class V:
    """IR building blocks for vectors of ``lanes`` float32 in ``builder``."""

    def __init__(self, builder, lanes):
        self.builder = builder
        self.lanes = lanes
        self.ty = ir.VectorType(ir.FloatType(), lanes)
        self.i64 = ir.IntType(64)
        self.fma_fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.ty, [self.ty] * 3), f"llvm.fma.v{lanes}f32")

    def int(self, v):
        """An int64 constant."""
        return ir.Constant(self.i64, v)

    def const(self, v):
        """A vector with ``v`` in every lane."""
        return ir.Constant(self.ty, [float(v)] * self.lanes)

    def ptr(self, base, off):
        """A vector pointer to ``base[off]`` (float32 elements)."""
        b = self.builder
        return b.bitcast(b.gep(base, [off], inbounds=True), self.ty.as_pointer())

    def load(self, base, off):
        return self.builder.load(self.ptr(base, off), align=4)

    def store(self, v, base, off):
        self.builder.store(v, self.ptr(base, off), align=4)

    def splat(self, x):
        """A vector of the float32 scalar ``x`` in every lane."""
        b = self.builder
        undef = ir.Constant(self.ty, ir.Undefined)
        v = b.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
        return b.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), self.lanes),
                                                      [0] * self.lanes))

    def fma(self, a, b, c):
        """a * b + c, rounded once."""
        return self.builder.call(self.fma_fn, [a, b, c])

    def at(self, base, *terms):
        """``base`` plus int64 values and Python ints, as one int64 offset."""
        off = base
        for t in terms:
            off = self.builder.add(off, self.int(t) if isinstance(t, int) else t)
        return off

    def relu(self, x):
        """x where x > 0 or x is NaN, else 0 (the Relu op's rule)."""
        zero = self.const(0.0)
        return self.builder.select(self.builder.fcmp_unordered(">", x, zero), x, zero)

    def clip(self, x, lo, hi):
        """x clamped to the vectors [lo, hi] as the Clip op does (a NaN stays NaN)."""
        b = self.builder
        x = b.select(b.fcmp_ordered("<", x, lo), lo, x)
        return b.select(b.fcmp_ordered(">", x, hi), hi, x)


def shuffle(builder, a, b, idx):
    """Lanes ``idx`` of a's lanes followed by b's (as LLVM's shufflevector)."""
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(idx)),
                                                    idx))


def transpose8(builder, rows):
    """8 vectors of 8 floats transposed: out[l][p] = rows[p][l], in three
    rounds of shuffles (pairs of lanes interleaved, then pairs of pairs,
    then 128-bit halves: 24 shuffles)."""
    def shuf(a, b, idx):
        return shuffle(builder, a, b, idx)
    lo2, hi2 = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    t = []
    for i in range(0, 8, 2):
        t += [shuf(rows[i], rows[i + 1], lo2), shuf(rows[i], rows[i + 1], hi2)]
    lo4, hi4 = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    u = []
    for i in (0, 4):
        u += [shuf(t[i], t[i + 2], lo4), shuf(t[i], t[i + 2], hi4),
              shuf(t[i + 1], t[i + 3], lo4), shuf(t[i + 1], t[i + 3], hi4)]
    # u[0..3]: lanes (0, 4), (1, 5), (2, 6), (3, 7) of rows 0-3; u[4..7]: of rows 4-7
    lo8, hi8 = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    return [shuf(u[c], u[c + 4], lo8) for c in range(4)] + \
        [shuf(u[c], u[c + 4], hi8) for c in range(4)]
