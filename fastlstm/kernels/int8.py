"""Integer products for quantized recurrent layers: u8 activations x s8 weights.

Scheme
------
A product row ``a`` (an input row of X, or a row of h) is quantized to uint8
with its own scale and zero point (asymmetric, onnxruntime's rule: the range
[min(0, min a), max(0, max a)] mapped onto 0..255, zero point rounded half to
even, values ``clamp(rint(a / scale) + zp, 0, 255)``).  Weights are int8 with a
scale per output column (``w = scale_n * (q - zw_n)``).  The product of a
quantized row with column n is then, exactly, in integers::

    acc_n = sum_k (a_k - za) * (q_kn - zw_n)
          = sum_k a_k q_kn  -  za * colsum_n  -  zw_n * (rowsum - K * za)

where ``colsum_n = sum_k q_kn`` and ``rowsum = sum_k a_k``, and the float
result is ``float(acc_n) * (scale_a * scale_n)`` (onnxruntime's order:
the two scales multiplied first).  ``sum_k a_k q_kn`` is what the register
tiles below compute with ``vpdpbusd`` (AVX-512 VNNI: per 32-bit lane, four
u8 x s8 products added to an int32 accumulator, 64 multiply-adds per
instruction); the correction terms are applied once per output.

Layouts
-------
A quantized row is ``Kp`` bytes (K rounded up to a multiple of 4, zero
padded) followed by a 16-byte tail of float32 values: scale, zero point,
rowsum, 0 (the two integers are exact in float32 for K < 65793).  As float32
units that is ``Kp/4 + 4`` per row (``qrow_floats``), so a quantized X is a
float32 array the front end copies row by row like a float one.

Weights ``Wt[K, N]`` (N a multiple of 16, tile-ordered columns as
``fastlstm.pack``) are stored as 64-column panels like the float path; inside
a panel, for each group of 4 k, the 4 bytes of column c sit together
(``[Kp/4][64][4]``), so one 64-byte load gives 16 columns' 4 weights, matching
the 4 activation bytes ``vpdpbusd`` broadcasts.  Panel p starts at byte
``64 p Kp``.  After the panels (a multiple of 64 bytes) come arrays of N: scale
(float32), colsum and zero point (int32 bits in the float32 array)
(``wblob_layout``).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import config

F32P = types.CPointer(types.float32)
_jit = config.jit_options()
#: Quantizing keeps true division (onnxruntime divides; "arcp" would let LLVM
#: multiply by a reciprocal, one ulp away, and flip roundings at .5)
_jit_div = config.jit_options(fastmath=set(config.NUMBA_FASTMATH) - {"arcp"})
_I = types.int64
_F = types.float32
VL = 8      # int32 lanes of one AVX2 register: 8 columns x 4 k
BLOCK = 4 * VL   # columns of the widest tile
PANEL = config.PANEL
MAX_ROWS = 2     # 2 rows x 4 vectors: 8 accumulators, 4 weight vectors, the broadcast,
                 # the ones and a temporary fill the 16 ymm registers (3 rows spill)


@njit(**_jit)
def pad4(k):
    """K rounded up to a multiple of 4 (a group of one 32-bit lane)."""
    return -(-k // 4) * 4


@njit(**_jit)
def qrow_floats(k):
    """float32 units of one quantized row of K values (bytes, then the tail)."""
    return pad4(k) // 4 + 4


#: float32 units before the panels of a weight blob: K, N, then zeros (64 bytes)
HEAD = 16


@njit(**_jit)
def wblob_layout(K, N):
    """(panel bytes, float32 offset of scales, of colsums, of zero points,
    total float32 units) of an int8 weight blob."""
    pb = pad4(K) * N
    f0 = HEAD + pb // 4
    return pb, f0, f0 + N, f0 + 2 * N, f0 + 3 * N


# ---------------------------------------------------------------- intrinsics

@intrinsic
def store_u8(typingctx, base, byte_off, value):
    """Store the low byte of int64 ``value`` at byte ``byte_off`` of a float32 buffer."""
    sig = types.void(F32P, _I, _I)

    def codegen(context, builder, signature, args):
        base, off, v = args
        p = builder.bitcast(base, ir.IntType(8).as_pointer())
        p = builder.gep(p, [off])
        builder.store(builder.trunc(v, ir.IntType(8)), p)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def load_i32(typingctx, base, idx):
    """The int32 at element ``idx`` of a float32 buffer read as int32, widened."""
    sig = types.int64(F32P, _I)

    def codegen(context, builder, signature, args):
        base, idx = args
        p = builder.bitcast(base, ir.IntType(32).as_pointer())
        v = builder.load(builder.gep(p, [idx]))
        return builder.sext(v, ir.IntType(64))
    return sig, codegen


@intrinsic
def ptr_add(typingctx, base, n):
    """``base + n`` (float32 units): a pointer into the middle of a buffer."""
    sig = F32P(F32P, _I)

    def codegen(context, builder, signature, args):
        return builder.gep(args[0], [args[1]])
    return sig, codegen


@intrinsic
def corrected(typingctx, acc, i, w, ci, zi, za, rz):
    """float32(acc[i] - za * w[ci] - w[zi] * rz), all int32 (the buffers read as
    int32): a raw product with its zero-point terms (module docstring), in
    int32 arithmetic so that a loop of them vectorizes (AVX2 has no int64
    multiply).  Exact: every term fits int32 for K < 65793."""
    sig = types.float32(F32P, _I, F32P, _I, _I, _I, _I)

    def codegen(context, builder, signature, args):
        acc, i, w, ci, zi, za, rz = args
        i32 = ir.IntType(32)
        ap = builder.bitcast(acc, i32.as_pointer())
        wp = builder.bitcast(w, i32.as_pointer())
        a = builder.load(builder.gep(ap, [i]))
        cs = builder.load(builder.gep(wp, [ci]))
        zw = builder.load(builder.gep(wp, [zi]))
        v = builder.sub(a, builder.mul(builder.trunc(za, i32), cs))
        v = builder.sub(v, builder.mul(zw, builder.trunc(rz, i32)))
        return builder.sitofp(v, ir.FloatType())
    return sig, codegen


def _make_tile(MR, NV):
    @intrinsic
    def tile(typingctx, KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo):
        # a: u8 rows (byte offsets aoff, lda); w: panel bytes (woff, ldw = bytes per
        # group of 4 k); out: int32 (element offsets ooff, ldo), overwritten.
        sig = types.void(_I, F32P, _I, _I, F32P, _I, _I, F32P, _I, _I)

        def codegen(context, builder, signature, args):
            KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo = args
            i8, i16, i32, i64 = (ir.IntType(b) for b in (8, 16, 32, 64))
            bty = ir.VectorType(i8, 32)
            hty = ir.VectorType(i16, 16)
            vty = ir.VectorType(i32, VL)
            maddubs = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(hty, [bty, bty]), "llvm.x86.avx2.pmadd.ub.sw")
            maddwd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [hty, hty]), "llvm.x86.avx2.pmadd.wd")
            ones = ir.Constant(hty, [1] * 16)
            undef = ir.Constant(vty, ir.Undefined)
            zero32 = ir.Constant(i32, 0)
            splat = ir.Constant(ir.VectorType(i32, VL), [0] * VL)
            ab = builder.bitcast(a, i8.as_pointer())
            wb = builder.bitcast(w, i8.as_pointer())
            ob = builder.bitcast(out, i32.as_pointer())

            def const(v):
                return ir.Constant(i64, v)

            accs = []
            for r in range(MR):
                row = []
                for v in range(NV):
                    slot = cgutils.alloca_once(builder, vty)
                    builder.store(ir.Constant(vty, [0] * VL), slot)
                    row.append(slot)
                accs.append(row)
            with cgutils.for_range(builder, KG) as loop:
                kg = loop.index
                wrow = builder.add(woff, builder.mul(kg, ldw))
                wv = []
                for v in range(NV):
                    p = builder.gep(wb, [builder.add(wrow, const(4 * VL * v))], inbounds=True)
                    wv.append(builder.load(builder.bitcast(p, bty.as_pointer()), align=1))
                four = builder.mul(kg, const(4))
                for r in range(MR):
                    idx = builder.add(builder.add(aoff, builder.mul(const(r), lda)), four)
                    p = builder.gep(ab, [idx], inbounds=True)
                    av = builder.load(builder.bitcast(p, i32.as_pointer()), align=1)
                    vec = builder.insert_element(undef, av, zero32)
                    vec = builder.bitcast(builder.shuffle_vector(vec, undef, splat), bty)
                    for v in range(NV):
                        pairs = builder.call(maddubs, [vec, wv[v]])
                        quads = builder.call(maddwd, [pairs, ones])
                        acc = builder.load(accs[r][v])
                        builder.store(builder.add(acc, quads), accs[r][v])
            for r in range(MR):
                base = builder.add(ooff, builder.mul(const(r), ldo))
                for v in range(NV):
                    p = builder.gep(ob, [builder.add(base, const(VL * v))], inbounds=True)
                    builder.store(builder.load(accs[r][v]), builder.bitcast(p, vty.as_pointer()),
                                  align=4)
            return context.get_dummy_value()
        return sig, codegen
    tile.__name__ = f"itile_{MR}x{NV}"
    return tile


_T = {(mr, nv): _make_tile(mr, nv) for mr in range(1, MAX_ROWS + 1) for nv in range(1, 5)}
i1_1, i1_2, i1_3, i1_4 = (_T[(1, v)] for v in range(1, 5))
i2_1, i2_2, i2_3, i2_4 = (_T[(2, v)] for v in range(1, 5))
#: one row by a whole 64-column panel: the batch-1 step (8 accumulators; one
#: broadcast of the row's 4 bytes feeds 8 products)
i1_8 = _make_tile(1, 8)


@njit(types.void(_I, _I, _I, F32P, _I, _I, F32P, _I, _I, F32P, _I, _I), **_jit)
def _itile(mr, nv, KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo):
    if mr == 2:
        if nv == 4:
            i2_4(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        elif nv == 3:
            i2_3(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        elif nv == 2:
            i2_2(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        else:
            i2_1(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
    else:
        if nv == 4:
            i1_4(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        elif nv == 3:
            i1_3(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        elif nv == 2:
            i1_2(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)
        else:
            i1_1(KG, a, aoff, lda, w, woff, ldw, out, ooff, ldo)


@njit(types.void(_I, _I, _I, _I, _I, F32P, _I, _I, F32P, F32P, _I, _I), **_jit)
def qdot(M, K, N, c0, c1, a, aoff, lda, w, acc, accoff, accld):
    """Raw integer products: acc[accoff + m*accld + n] = sum_k a_mk q_kn (int32,
    over the padded K) for quantized rows m < M of ``a`` (``lda`` float32 units
    apart from unit ``aoff``) and columns c0 <= n < c1 of blob ``w`` (c0 a
    multiple of 64, c1 of 64 or N).  The tile pairs k (2i, 2i+1) in
    ``vpmaddubsw``, whose int16 sums saturate: rows quantized to 0..127 never
    reach it (|sum| <= 2*127*128); onnxruntime's 0..255 rows can, as they do
    in its own AVX2 kernel, which pairs k the same way."""
    Kp = pad4(K)
    KG = Kp // 4
    first = c0 // PANEL
    last = (c1 + PANEL - 1) // PANEL - 1
    for p in range(first, last + 1):
        n0 = p * PANEL
        width = min(PANEL, N - n0)
        m = 0
        while m < M:
            mr = min(MAX_ROWS, M - m)
            if mr == 1 and width == PANEL:
                i1_8(KG, a, (aoff + m * lda) * 4, lda * 4, w, HEAD * 4 + n0 * Kp, width * 4,
                     acc, accoff + m * accld + n0, accld)
                m += 1
                continue
            for j0 in range(0, width, BLOCK):
                nv = min(BLOCK, width - j0) // VL
                _itile(mr, nv, KG, a, (aoff + m * lda) * 4, lda * 4, w,
                       HEAD * 4 + n0 * Kp + j0 * 4, width * 4, acc,
                       accoff + m * accld + n0 + j0, accld)
            m += mr


@njit(types.void(_I, _I, _I, _I, _I, F32P, _I, _I, F32P, F32P, _I, _I, F32P), **_jit)
def qgemm(M, K, N, c0, c1, a, aoff, lda, w, out, ooff, ldo, bias):
    """out[ooff + m*ldo + n] = dequantized (row m of ``a``) . (column n of ``w``)
    + bias[n] for c0 <= n < c1: ``qdot`` into ``out`` itself, then each int32
    turned in place into ``float(acc_n) * (scale_a * scale_n)`` (the module
    docstring's correction terms applied first)."""
    qdot(M, K, N, c0, c1, a, aoff, lda, w, out, ooff, ldo)
    _, fs, fc, fz, _ = wblob_layout(K, N)
    KG = pad4(K) // 4
    for m in range(M):
        row = aoff + m * lda
        sa = a[row + KG]
        za = np.int64(a[row + KG + 1])
        rz = np.int64(a[row + KG + 2]) - K * za
        o = ooff + m * ldo
        for n in range(c0, c1):
            f = corrected(out, o + n, w, fc + n, fz + n, za, rz)
            out[o + n] = f * (sa * w[fs + n]) + bias[n]


# ---------------------------------------------------------------- quantizing rows

@njit(types.UniTuple(_F, 2)(_F, _F, _F), **_jit_div)
def qparams(lo, hi, qmax):
    """onnxruntime's (scale, zero point) for data in [lo, hi] quantized to
    0..qmax (255 as onnxruntime; 127 for fastlstm's own rows, see ``qdot``)."""
    lo = min(lo, np.float32(0.0))
    hi = max(hi, np.float32(0.0))
    if hi == lo:
        scale = np.float32(1.0)
    else:
        scale = (hi - lo) / qmax
    z = np.float32(0.0) - lo / scale
    z = min(max(z, np.float32(0.0)), qmax)
    return scale, np.float32(np.rint(z))


@njit(**_jit_div)
def quantize_rows(x, K, per_row, qmax):
    """Quantize rows of float32 ``x`` ([..., K], C-contiguous) into a float32
    array [..., qrow_floats(K)]: one (scale, zp) per row, or one for all rows
    (onnxruntime's per-tensor scheme for X in DynamicQuantizeLSTM)."""
    rows = x.size // K if K else 0
    Q = qrow_floats(K)
    out = np.empty(rows * Q, np.float32)
    flat = x.reshape(-1)
    s = np.float32(1.0)
    z = np.float32(0.0)
    if not per_row:
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for i in range(flat.size):
            lo = min(lo, flat[i])
            hi = max(hi, flat[i])
        s, z = qparams(lo, hi, qmax)
    for r in range(rows):
        if per_row:
            lo = np.float32(np.inf)
            hi = np.float32(-np.inf)
            for k in range(K):
                v = flat[r * K + k]
                lo = min(lo, v)
                hi = max(hi, v)
            s, z = qparams(lo, hi, qmax)
        quantize_into(flat.ctypes, r * K, K, s, z, qmax, out.ctypes, r * Q)
    return out


# ---------------------------------------------------------------- packing

def pack_weights(q, scale, zp):
    """An int8 weight blob (float32 array, ``wblob_layout``) from ``q`` int8
    ``Wt[K, N]`` (N a multiple of 16, tile-ordered columns), per-column float32
    ``scale`` and ``zp`` (the integer zero points)."""
    q = np.asarray(q, np.int8)
    K, N = q.shape
    Kp = pad4(K)
    qp = np.zeros((Kp, N), np.int8)
    qp[:K] = q
    parts = []
    for n0 in range(0, N, PANEL):
        blk = qp[:, n0:n0 + PANEL]                       # [Kp, w]
        w = blk.shape[1]
        parts.append(blk.reshape(Kp // 4, 4, w).transpose(0, 2, 1).reshape(-1))
    pb, fs, fc, fz, total = wblob_layout(K, N)
    blob = np.zeros(total, np.float32)
    blob[0] = K
    blob[1] = N
    if parts:
        blob.view(np.int8)[HEAD * 4:HEAD * 4 + pb] = np.concatenate(parts)
    blob[fs:fs + N] = scale
    blob[fc:fc + N] = q.sum(axis=0, dtype=np.int32).view(np.float32)    # int32 bits
    blob[fz:fz + N] = np.asarray(zp).astype(np.int32).view(np.float32)
    return blob


# ---------------------------------------------------------------- inside a step

@intrinsic
def store_u8f(typingctx, base, byte_off, value):
    """Store float32 ``value`` (a whole number in 0..255) as one byte at byte
    ``byte_off`` of a float32 buffer (through int32: AVX2 converts 8 at once)."""
    sig = types.void(F32P, _I, _F)

    def codegen(context, builder, signature, args):
        base, off, v = args
        p = builder.gep(builder.bitcast(base, ir.IntType(8).as_pointer()), [off])
        builder.store(builder.trunc(builder.fptosi(v, ir.IntType(32)), ir.IntType(8)), p)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def load_u8(typingctx, base, byte_off):
    """The byte at ``byte_off`` of a float32 buffer, as an unsigned int64."""
    sig = _I(F32P, _I)

    def codegen(context, builder, signature, args):
        base, off = args
        p = builder.gep(builder.bitcast(base, ir.IntType(8).as_pointer()), [off])
        return builder.zext(builder.load(p), ir.IntType(64))
    return sig, codegen


@njit(types.void(F32P, _I, _I, _F, _F, _F, F32P, _I), **_jit_div)
def quantize_into(src, soff, K, scale, zp, qmax, dst, doff):
    """Quantize src[soff:soff+K] with (scale, zp) to 0..qmax into the row at
    float32 unit ``doff`` of ``dst`` (bytes, zero padding to Kp, the tail).
    Two passes that each vectorize: the bytes, then their sum."""
    KG = pad4(K) // 4
    base = doff * 4
    lo = -zp
    hi = qmax - zp
    for k in range(K):
        v = src[soff + k] / scale
        v = min(max(v, lo), hi)
        store_u8f(dst, base + k, np.float32(np.rint(v)) + zp)
    for k in range(K, KG * 4):
        store_u8(dst, base + k, 0)
    rs = np.int64(0)
    for k in range(K):
        rs += load_u8(dst, base + k)
    dst[doff + KG] = scale
    dst[doff + KG + 1] = zp
    dst[doff + KG + 2] = np.float32(rs)
    dst[doff + KG + 3] = 0.0


@njit(types.void(_I, F32P, _I, _I, types.boolean, _F, F32P, _I, _I), **_jit)
def quantize_state(nrows, h, ld, K, per_row, qmax, dst, doff, dld):
    """Quantize ``nrows`` rows of h (``ld`` apart, K values each) into rows of
    ``dst`` (``dld`` float32 units apart from unit ``doff``): one scale per
    row, or one for them all (onnxruntime's per-step scale for the batch)."""
    s = np.float32(1.0)
    z = np.float32(0.0)
    if not per_row:
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for b in range(nrows):
            for k in range(K):
                v = h[b * ld + k]
                lo = min(lo, v)
                hi = max(hi, v)
        s, z = qparams(lo, hi, qmax)
    for b in range(nrows):
        if per_row:
            lo = np.float32(np.inf)
            hi = np.float32(-np.inf)
            for k in range(K):
                v = h[b * ld + k]
                lo = min(lo, v)
                hi = max(hi, v)
            s, z = qparams(lo, hi, qmax)
        quantize_into(h, b * ld, K, s, z, qmax, dst, doff + b * dld)
