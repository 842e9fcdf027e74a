"""Quantized ops, as ``onnxruntime.quantization.quantize_dynamic`` writes them.

Default domain: DynamicQuantizeLinear, QuantizeLinear, DequantizeLinear,
MatMulInteger, ConvInteger.  ``com.microsoft``: DynamicQuantizeLSTM,
DynamicQuantizeMatMul, MatMulIntegerToFloat (the fused forms onnxruntime's
optimizer saves).

onnxruntime's integer scheme, followed here so results match it:

- dynamic quantization of a float tensor to uint8: the range
  [min(0, min x), max(0, max x)], ``scale = (max - min) / 255`` (1 when the
  range is empty), ``zp = rint(clamp(-min / scale, 0, 255))`` (half to even),
  ``q = clamp(rint(x / scale) + zp, 0, 255)`` -- float32 throughout, division
  (not a reciprocal);
- integer products exact in int32, except that onnxruntime's AVX2 GEMM for
  uint8 x int8 (``vpmaddubsw``: MatMulInteger, the fused MatMul forms,
  DynamicQuantizeLSTM) adds the products of k = 2i, 2i+1 in int16 with
  saturation; ``kernels.int8.qdot`` does the same, so the integers agree
  with onnxruntime on this CPU exactly (measured; its ConvInteger, and
  uint8 x uint8, are exact, and so are they here);
- back to float: ``float(acc) * (scale_a * scale_b)`` (the scales multiplied
  first), then the bias.

So every integer agrees; what can differ is float rounding after the
integers (the order of a sum, the activation functions' last bits), about
1e-7 relative.  In a recurrent layer such a difference can move a value of h
across a rounding boundary of the next step's quantization, which changes
that element by one quantization step (the scale, up to range/255 ~ 8e-3 for
h in [-1, 1]) and the outputs after it by about one step's effect; see
``tests/test_quantized.py`` for the tolerance this gives.
"""
import numpy as np
from numba import njit

from ..errors import InvalidInput, InvalidModel, UnsupportedOp
from ..kernels import int8
from .recurrent import RecurrentRunner
from .table import OPS, attr, op

_U8, _I8 = np.dtype(np.uint8), np.dtype(np.int8)
_QTYPES = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max)
           for t in (np.uint8, np.int8, np.uint16, np.int16)}


def _err(node, msg):
    return InvalidInput(f"{node.describe()}: {msg}")


def _refuse(node, what):
    raise UnsupportedOp(f"{node.describe()}: {what}", node.op_type, node.domain,
                        node.since_version, node.name)


def dynamic_qparams(x):
    """onnxruntime's uint8 (scale, zero point) for float32 data ``x``."""
    x = np.asarray(x, np.float32)
    lo = np.float32(min(float(x.min()), 0.0)) if x.size else np.float32(0.0)
    hi = np.float32(max(float(x.max()), 0.0)) if x.size else np.float32(0.0)
    s, z = int8.qparams(lo, hi, np.float32(255.0))
    return np.float32(s), np.uint8(z)


def quantize(x, scale, zp, lo, hi, dtype):
    """``clamp(rint(x / scale) + zp, lo, hi)`` in float32, as ``dtype``."""
    v = np.asarray(x, np.float32) / np.asarray(scale, np.float32)
    v = np.rint(v) + np.asarray(zp, np.float32)
    return np.clip(v, lo, hi).astype(dtype)


# ---------------------------------------------------------------- integer products

@njit(cache=True, nogil=True)
def _qdot_arrays(M, K, N, rows, Q, blob, acc):
    int8.qdot(M, K, N, 0, N, rows.ctypes, 0, Q, blob.ctypes, acc.ctypes, 0, N)


def _raw_u8s8(a, b):
    """sum_k a[m, k] b[k, n] for uint8 a [M, K], int8 b [K, N] as onnxruntime's
    AVX2 kernel computes it (int16 pair sums saturate; see the module doc)."""
    M, K = a.shape
    N = b.shape[1]
    Np = -(-N // 16) * 16
    bp = np.zeros((K, Np), np.int8)
    bp[:, :N] = b
    blob = int8.pack_weights(bp, np.ones(Np, np.float32), np.zeros(Np, np.float32))
    Q = int8.qrow_floats(K)
    rows = np.zeros((M, Q), np.float32)
    rows.view(np.uint8)[:, :K] = a
    acc = np.empty((M, Np), np.float32)
    if M and K:
        _qdot_arrays(M, K, Np, rows, Q, blob, acc)
    else:
        acc[:] = 0
    return acc.view(np.int32)[:, :N].astype(np.int64)


def int_matmul(a, b, azp, bzp, saturate=True):
    """``(a - azp) @ (b - bzp)`` as int64 for 2-D integer ``a`` [M, K] and ``b``
    [K, N]; ``azp`` a scalar or per row [M], ``bzp`` a scalar or per column [N].
    ``saturate``: uint8 x int8 as onnxruntime's AVX2 GEMM (its MatMulInteger and
    fused forms); False: exact (its ConvInteger, measured)."""
    M, K = a.shape
    azp = np.asarray(azp, np.int64).reshape(-1)
    bzp = np.asarray(bzp, np.int64).reshape(-1)
    if saturate and a.dtype == _U8 and b.dtype == _I8:
        raw = _raw_u8s8(a, b)
    else:   # exact: products of 8/16-bit integers sum exactly in float64 (K < 2^21)
        raw = np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    colsum = b.astype(np.int64).sum(axis=0)
    rowsum = a.astype(np.int64).sum(axis=1)
    za = azp[:, None] if azp.size > 1 else azp[0]
    zb = bzp[None, :] if bzp.size > 1 else bzp[0]
    return raw - za * colsum[None, :] - zb * rowsum[:, None] + K * za * zb


def _matmul_int(node, a, b, azp, bzp):
    """numpy-batched MatMulInteger: int64 result."""
    if a.ndim < 1 or b.ndim < 1:
        raise _err(node, "MatMulInteger inputs must have rank >= 1")
    if b.ndim == 2 and a.ndim >= 2:
        lead = a.shape[:-1]
        a2 = a.reshape(-1, a.shape[-1])
        if a.shape[-1] != b.shape[0]:
            raise _err(node, f"A {a.shape} and B {b.shape} do not multiply")
        za = np.asarray(azp).reshape(-1)
        if za.size > 1:     # per row of A's last-but-one axis
            za = np.broadcast_to(za, lead).reshape(-1) if za.size == lead[-1] else None
            if za is None:
                raise _err(node, "a_zero_point must be a scalar or have one value per row")
        return int_matmul(a2, b, za, bzp).reshape(lead + (b.shape[1],))
    # general batching (rare in quantized models): exact in float64
    za = np.asarray(azp, np.float64)
    if za.ndim == 1 and za.size > 1:
        za = za[:, None]
    y = (a.astype(np.float64) - za) @ (b.astype(np.float64) - np.asarray(bzp, np.float64))
    return np.rint(y).astype(np.int64)


def _zp(ins, i, dtype):
    z = ins[i] if len(ins) > i and ins[i] is not None else None
    if z is None:
        return np.zeros((), np.int64)
    if z.dtype != dtype:
        raise InvalidInput(f"zero point of type {z.dtype} does not match its tensor's {dtype}")
    return z.astype(np.int64)


@op("MatMulInteger", since=10, inputs=(2, 4))
def matmul_integer(node, ins, n):
    """(A - a_zero_point) @ (B - b_zero_point) in int32."""
    a, b = ins[0], ins[1]
    for x, label in ((a, "A"), (b, "B")):
        if x.dtype not in (_U8, _I8):
            raise _err(node, f"{label} is {x.dtype}; uint8 or int8 expected")
    y = _matmul_int(node, a, b, _zp(ins, 2, a.dtype), _zp(ins, 3, b.dtype))
    return [y.astype(np.int32)]


def _scale_vec(s, label, node):
    s = np.asarray(s, np.float32)
    if s.ndim > 1:
        raise _err(node, f"{label} must be a scalar or 1-D")
    return s


def _to_float(node, acc, a_scale, b_scale, bias):
    """float(acc) * (a_scale * b_scale) + bias, onnxruntime's order."""
    mult = np.asarray(a_scale, np.float32) * _scale_vec(b_scale, "b_scale", node)
    y = acc.astype(np.float32) * mult
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    return y.astype(np.float32)


@op("MatMulIntegerToFloat", since=1, inputs=(4, 7))
def matmul_integer_to_float(node, ins, n):
    """com.microsoft: MatMulInteger, then times a_scale * b_scale, plus bias."""
    a, b = ins[0], ins[1]
    acc = _matmul_int(node, a, b, _zp(ins, 4, a.dtype), _zp(ins, 5, b.dtype))
    return [_to_float(node, acc, ins[2], ins[3], ins[6] if len(ins) > 6 else None)]


@op("DynamicQuantizeMatMul", since=1, inputs=(3, 5))
def dynamic_quantize_matmul(node, ins, n):
    """com.microsoft: A quantized to uint8 (one scale), times integer B, back to float."""
    a, b = ins[0], ins[1]
    if a.dtype != np.float32:
        raise _err(node, f"A is {a.dtype}; float32 expected")
    s, z = dynamic_qparams(a)
    qa = quantize(a, s, z, 0, 255, np.uint8)
    acc = _matmul_int(node, qa, b, np.int64(z), _zp(ins, 3, b.dtype))
    return [_to_float(node, acc, s, ins[2], ins[4] if len(ins) > 4 else None)]


@op("DynamicQuantizeLinear", since=11, outputs=(3, 3))
def dynamic_quantize_linear(node, ins, n):
    """x to uint8 with a scale and zero point from its own range."""
    x = ins[0]
    if x.dtype != np.float32:
        raise _err(node, f"x is {x.dtype}; float32 expected")
    s, z = dynamic_qparams(x)
    return [quantize(x, s, z, 0, 255, np.uint8), np.array(s, np.float32),
            np.array(z, np.uint8)]


def _axis_shape(node, x, s, axis):
    """Shape that broadcasts a per-axis parameter ``s`` against ``x``."""
    s = np.asarray(s)
    if s.ndim == 0 or s.size == 1 and s.ndim <= 1:
        return s.reshape(())
    if s.ndim != 1:
        _refuse(node, "blocked quantization (block_size) is not supported")
    ax = axis + x.ndim if axis < 0 else axis
    if not 0 <= ax < x.ndim or x.shape[ax] != s.size:
        raise _err(node, f"{s.size} values for axis {axis} of a tensor of shape {x.shape}")
    return s.reshape([s.size if i == ax else 1 for i in range(x.ndim)])


_ELEM = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}


@op("QuantizeLinear", since=10, attrs=["axis", "saturate", "block_size", "output_dtype"],
    inputs=(2, 3))
def quantize_linear(node, ins, n):
    """y = saturate(rint(x / y_scale) + y_zero_point), uint8 unless the zero point
    (or output_dtype) says otherwise."""
    x, s = ins[0], ins[1]
    if int(attr(node, "block_size", 0)):
        _refuse(node, "blocked quantization (block_size) is not supported")
    zp = ins[2] if len(ins) > 2 else None
    if zp is not None:
        dtype = zp.dtype
    else:
        od = int(attr(node, "output_dtype", 0))
        if od and od not in _ELEM:
            _refuse(node, f"output_dtype {od}: only uint8, int8, uint16, int16")
        dtype = np.dtype(_ELEM.get(od, np.uint8))
    if dtype not in _QTYPES:
        _refuse(node, f"quantizing to {dtype}: only uint8, int8, uint16, int16")
    lo, hi = _QTYPES[dtype]
    axis = int(attr(node, "axis", 1))
    s = _axis_shape(node, x, s, axis)
    z = np.zeros((), np.float32) if zp is None else _axis_shape(node, x, zp, axis)
    return [quantize(x, s, z, lo, hi, dtype)]


@op("DequantizeLinear", since=10, attrs=["axis", "block_size"], inputs=(2, 3))
def dequantize_linear(node, ins, n):
    """y = (x - x_zero_point) * x_scale, in the scale's float type."""
    x, s = ins[0], ins[1]
    if int(attr(node, "block_size", 0)):
        _refuse(node, "blocked quantization (block_size) is not supported")
    if x.dtype.kind not in "iu":
        _refuse(node, f"dequantizing {x.dtype}: integer inputs only")
    axis = int(attr(node, "axis", 1))
    s = _axis_shape(node, x, s, axis)
    zp = ins[2] if len(ins) > 2 else None
    z = np.zeros((), np.int64) if zp is None else _axis_shape(node, x, zp, axis).astype(np.int64)
    d = (x.astype(np.int64) - z).astype(np.float32)
    return [(d * s.astype(np.float32)).astype(s.dtype if s.dtype.kind == "f" else np.float32)]


# ---------------------------------------------------------------- ConvInteger

def _conv_geometry(node, x, w):
    nd = x.ndim - 2
    ks = list(attr(node, "kernel_shape", w.shape[2:]))
    strides = list(attr(node, "strides", [1] * nd))
    dil = list(attr(node, "dilations", [1] * nd))
    pads = list(attr(node, "pads", [0] * (2 * nd)))
    auto = attr(node, "auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            out = -(-x.shape[2 + i] // strides[i])
            need = max(0, (out - 1) * strides[i] + (ks[i] - 1) * dil[i] + 1 - x.shape[2 + i])
            lo = need // 2 if auto == "SAME_UPPER" else need - need // 2
            pads[i], pads[nd + i] = lo, need - lo
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    return nd, ks, strides, dil, pads


@op("ConvInteger", since=10, attrs=["auto_pad", "dilations", "group", "kernel_shape", "pads",
                                    "strides"], inputs=(2, 4))
def conv_integer(node, ins, n):
    """Convolution of (x - x_zero_point) with (w - w_zero_point), int32 out
    (im2col, then the integer product of ``int_matmul``)."""
    x, w = ins[0], ins[1]
    for t, label in ((x, "x"), (w, "w")):
        if t.dtype not in (_U8, _I8):
            raise _err(node, f"{label} is {t.dtype}; uint8 or int8 expected")
    xz = _zp(ins, 2, x.dtype)
    wz = _zp(ins, 3, w.dtype).reshape(-1)
    if xz.size != 1:
        _refuse(node, "x_zero_point must be a scalar")
    nd, ks, strides, dil, pads = _conv_geometry(node, x, w)
    g = int(attr(node, "group", 1))
    Bn, C = x.shape[:2]
    M = w.shape[0]
    if C % g or M % g or w.shape[1] != C // g:
        raise _err(node, f"x {x.shape}, w {w.shape} and group {g} disagree")
    # pad with the zero point (a padded element contributes nothing)
    xp = np.full((Bn, C) + tuple(x.shape[2 + i] + pads[i] + pads[nd + i] for i in range(nd)),
                 xz.reshape(()), x.dtype)
    xp[(slice(None), slice(None)) + tuple(slice(pads[i], pads[i] + x.shape[2 + i])
                                          for i in range(nd))] = x
    outs = [(xp.shape[2 + i] - ((ks[i] - 1) * dil[i] + 1)) // strides[i] + 1 for i in range(nd)]
    cg, mg = C // g, M // g
    K = cg * int(np.prod(ks))
    y = np.empty((Bn, M) + tuple(outs), np.int32)
    offsets = np.stack(np.meshgrid(*[np.arange(k) for k in ks], indexing="ij"), -1).reshape(-1, nd)
    P = int(np.prod(outs))
    for gi in range(g):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        cols = np.empty((Bn, P, cg, len(offsets)), x.dtype)
        for j, off in enumerate(offsets):
            sl = tuple(slice(off[i] * dil[i], off[i] * dil[i] + (outs[i] - 1) * strides[i] + 1,
                             strides[i]) for i in range(nd))
            cols[:, :, :, j] = xs[(slice(None), slice(None)) + sl].reshape(Bn, cg, P).transpose(0, 2, 1)
        a = cols.reshape(Bn * P, K)
        wm = w[gi * mg:(gi + 1) * mg].reshape(mg, K).T
        wzg = wz if wz.size == 1 else wz[gi * mg:(gi + 1) * mg]
        r = int_matmul(np.ascontiguousarray(a), np.ascontiguousarray(wm), xz, wzg,
                       saturate=False)
        y[:, gi * mg:(gi + 1) * mg] = r.reshape(Bn, P, mg).transpose(0, 2, 1).reshape(
            (Bn, mg) + tuple(outs))
    return [y]


# ---------------------------------------------------------------- DynamicQuantizeLSTM

_DQLSTM_ATTRS = ["activation_alpha", "activation_beta", "activations", "clip", "direction",
                 "hidden_size", "input_forget"]


@op("DynamicQuantizeLSTM", since=1, attrs=_DQLSTM_ATTRS, inputs=(3, 12), outputs=(0, 3),
    foldable=False, runner=RecurrentRunner)
def dynamic_quantize_lstm(node, ins, n):
    """com.microsoft: an LSTM on int8/uint8 weights, onnxruntime's scheme
    (``fastlstm.pack_lowp``, "ort-int8"); runs as a recurrent layer."""
    raise InvalidModel(f"{node.describe()}: weights must be constants")  # (runner runs it)


def _build_dqlstm(node, ctx):
    """Validate at import and pack the quantized weights once."""
    from dataclasses import replace

    from ..ir import DIRECTIONS, RecurrentLayer, RecurrentSpec
    from ..onnx_import.recurrent import resolve_activations
    from ..pack_lowp import ort_int8_layer
    a = node.attrs
    direction = a.get("direction", "forward")
    if direction not in DIRECTIONS:
        raise InvalidModel(f"{node.describe()}: direction '{direction}'")
    D = len(DIRECTIONS[direction])
    ins = list(node.inputs) + [""] * (12 - len(node.inputs))
    consts = [ctx.constant(ins[i]) for i in range(12)]
    for i, label in ((1, "W"), (2, "R"), (8, "W_scale"), (10, "R_scale")):
        if consts[i] is None:
            _refuse(node, f"input {label} must be a constant (an initializer)")
    W, R = consts[1], consts[2]
    if W.dtype not in (_U8, _I8) or R.dtype != W.dtype:
        raise InvalidModel(f"{node.describe()}: W and R must both be int8 or uint8, "
                           f"are {W.dtype} and {R.dtype}")
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise InvalidModel(f"{node.describe()}: W {W.shape} and R {R.shape} must be "
                           f"[{D}, input_size, 4*H] and [{D}, H, 4*H]")
    H = int(a.get("hidden_size", R.shape[1]))
    if R.shape[1:] != (H, 4 * H) or W.shape[2] != 4 * H:
        raise InvalidModel(f"{node.describe()}: W {W.shape}, R {R.shape} do not fit "
                           f"hidden_size {H}")
    for i in (3, 7):
        if ins[i] and consts[i] is None:
            _refuse(node, f"input {('B', 'P')[i == 7]} must be a constant")
    names = list(a.get("activations", [])) or ["Sigmoid", "Tanh", "Tanh"] * D
    if len(names) != 3 * D:
        raise InvalidModel(f"{node.describe()}: {len(names)} activations for {D} directions")
    triples = resolve_activations(node, names, list(a.get("activation_alpha", [])),
                                  list(a.get("activation_beta", [])))
    acts = tuple(tuple(triples[d * 3:(d + 1) * 3]) for d in range(D))
    clip = a.get("clip")
    clip = None if clip is None else float(clip)
    flag = int(a.get("input_forget", 0))

    def per_dir(v, label):
        v = np.asarray(v)
        if v.size == D:
            return v.reshape(D, 1)
        if v.shape == (D, 4 * H):
            return v
        raise InvalidModel(f"{node.describe()}: {label} has shape {v.shape}; [{D}] or "
                           f"[{D}, {4 * H}] expected")
    wz = None if consts[9] is None else per_dir(consts[9], "W_zero_point")
    rz = None if consts[11] is None else per_dir(consts[11], "R_zero_point")
    packed = ort_int8_layer(W, R, consts[3], consts[7], per_dir(consts[8], "W_scale"), wz,
                            per_dir(consts[10], "R_scale"), rz, H, acts, clip, flag)
    spec = RecurrentSpec(op="LSTM", direction=direction, hidden_size=H, layout=0, clip=clip,
                         acts=acts, activation_names=tuple(names), input_forget=flag)
    keep = [ins[0], "", "", "", ins[4], ins[5], ins[6], ""]
    while keep and not keep[-1]:
        keep.pop()
    ctx.require_float(node, ins[0], "X")
    return replace(node, inputs=tuple(keep), attrs={},
                   layer=RecurrentLayer(spec, packed=packed))


dynamic_quantize_lstm.build = _build_dqlstm

MS_DOMAIN = "com.microsoft"
#: ops that run as a recurrent layer of another op (their node carries it)
RECURRENT_AS = {"DynamicQuantizeLSTM": "LSTM"}
MS_OPS = ("DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def _register_ms():
    from ..onnx_import.basic import _builder
    from ..onnx_import.registry import register
    for name in MS_OPS:
        register(name, [1], domain=MS_DOMAIN)(_builder(OPS[name]))


def _set_loader():
    from ..onnx_import.registry import set_table_loader
    set_table_loader(_register_ms)     # run on the first lookup, after import


_set_loader()
