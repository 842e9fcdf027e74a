"""Helpers for kernels written as LLVM IR on vectors of float32.

Some loops are written as IR (``numba.extending.intrinsic``) rather than
Python: where LLVM's vectorizer leaves them scalar (several pointers into one
buffer it cannot prove apart) or keeps one chain of dependent operations at a
time where independent chains would overlap.  The intrinsics build their IR
with ``V``: vector type, int64 constants, loads and stores at element offsets
of a float32 pointer, splats and the FMA intrinsic.
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
