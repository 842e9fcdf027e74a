"""Register-blocked multiply-accumulate tiles written in LLVM IR.

LLVM vectorizes loops well but will not keep accumulators in registers across a
K loop when they live behind pointers it cannot prove distinct from the
weights, and its SLP vectorizer does not turn a block of scalar accumulators
into vector registers either (both measured: 10-70 GFLOP/s).  So the inner
tile of every product is spelled out here as IR: ``MR`` rows by ``NV`` vectors
of 16 floats of ``out`` are loaded into registers (or start at zero when the
tile's last argument ``zero`` is not 0: ``out`` is then only written),
updated with one fused multiply-add per weight vector per row for every k,
and stored once:

    for k in range(K):
        for v in range(NV):  wv = w[woff + k*ldw + 16*v : +16]
        for r in range(MR):  acc[r][v] = fma(broadcast(a[aoff + r*lda + k]), wv, acc[r][v])

Every output element is the same chain of FMAs in k order whatever MR and NV
are, so results do not depend on how a product is tiled (nor on how threads
split it).  ``<16 x float>`` is one AVX-512 register, or two AVX2 ones, as
LLVM lowers it for the host.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .. import config

F32P = types.CPointer(types.float32)
_I64 = types.int64
LANES = config.TILE


def _make_tile(MR, NV):
    @intrinsic
    def tile(typingctx, K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero):
        sig = types.void(_I64, F32P, _I64, _I64, F32P, _I64, _I64, F32P, _I64, _I64, _I64)

        def codegen(context, builder, signature, args):
            K, a, aoff, lda, w, woff, ldw, out, ooff, ldo, zero = args
            f32 = ir.FloatType()
            vty = ir.VectorType(f32, LANES)
            i64 = ir.IntType(64)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]), f"llvm.fma.v{LANES}f32")
            undef = ir.Constant(vty, ir.Undefined)
            zero32 = ir.Constant(ir.IntType(32), 0)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

            def vptr(base, off):
                p = builder.gep(base, [off], inbounds=True)
                return builder.bitcast(p, vty.as_pointer())

            def const(v):
                return ir.Constant(i64, v)

            accs = [[cgutils.alloca_once(builder, vty) for v in range(NV)] for r in range(MR)]
            # zero != 0: the accumulators start at 0 and ``out`` is not read
            with builder.if_else(builder.icmp_signed("!=", zero, const(0))) as (then, other):
                with then:
                    for row in accs:
                        for slot in row:
                            builder.store(ir.Constant(vty, [0.0] * LANES), slot)
                with other:
                    for r in range(MR):
                        base = builder.add(ooff, builder.mul(const(r), ldo))
                        for v in range(NV):
                            p = vptr(out, builder.add(base, const(LANES * v)))
                            builder.store(builder.load(p, align=4), accs[r][v])
            with cgutils.for_range(builder, K) as loop:
                k = loop.index
                wrow = builder.add(woff, builder.mul(k, ldw))
                wv = [builder.load(vptr(w, builder.add(wrow, const(LANES * v))), align=4)
                      for v in range(NV)]
                for r in range(MR):
                    aidx = builder.add(builder.add(aoff, builder.mul(const(r), lda)), k)
                    av = builder.load(builder.gep(a, [aidx], inbounds=True))
                    vec = builder.insert_element(undef, av, zero32)
                    vec = builder.shuffle_vector(vec, undef, splat)
                    for v in range(NV):
                        acc = builder.load(accs[r][v])
                        builder.store(builder.call(fma, [vec, wv[v], acc]), accs[r][v])
            for r in range(MR):
                base = builder.add(ooff, builder.mul(const(r), ldo))
                for v in range(NV):
                    p = vptr(out, builder.add(base, const(LANES * v)))
                    builder.store(builder.load(accs[r][v]), p, align=4)
            return context.get_dummy_value()

        return sig, codegen
    tile.__name__ = f"tile_{MR}x{NV}"
    return tile


#: Widest tile: 4 vectors of LANES floats, the width of a weight panel.
PANEL = config.PANEL
MAX_ROWS = 4
assert PANEL == 4 * LANES

#: TILES[(mr, nv)]: out[mr rows, nv*16 cols] += a[mr rows, K] @ w[K, nv*16 cols]
#: (= with ``zero``)
TILES = {(mr, nv): _make_tile(mr, nv) for mr in range(1, MAX_ROWS + 1) for nv in range(1, 5)}
t1_1, t1_2, t1_3, t1_4 = (TILES[(1, v)] for v in range(1, 5))
t2_1, t2_2, t2_3, t2_4 = (TILES[(2, v)] for v in range(1, 5))
t3_1, t3_2, t3_3, t3_4 = (TILES[(3, v)] for v in range(1, 5))
t4_1, t4_2, t4_3, t4_4 = (TILES[(4, v)] for v in range(1, 5))

#: 6 rows x one vector: on an AVX2 host (a 16-float vector is two registers)
#: 12 accumulators, each weight load feeding 6 FMAs (see gemm.TILE_ROWS).
t6_1 = _make_tile(6, 1)
#: 5 rows x one vector (10 accumulators): the last 5 rows of a product on an
#: AVX2 host, which 4 + 1 rows did with tiles of 8 and 2 accumulators (an FMA
#: has 4 cycles of latency and 2 issue per cycle, so a tile needs 8
#: independent accumulators to keep both FMA units busy; see gemm.panel_gemm).
t5_1 = _make_tile(5, 1)
