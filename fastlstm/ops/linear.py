"""Matrix products: MatMul and Gemm (the dense layers of model heads)."""
import numpy as np

from .. import limits
from .table import attr, op


def dense_weights(node, consts, rec):
    """W of a MatMul that one packed product (``fastlstm.kernels.dense``)
    runs for the recorded signature: constant 2-D float32 B and float32 A of
    rank >= 2; else None."""
    b, a = consts.get(node.inputs[1]), rec.get(node.inputs[0])
    if b is None or not isinstance(a, np.ndarray) or b.ndim != 2 or a.ndim < 2:
        return None
    if a.dtype != np.float32 or b.dtype != np.float32 or a.shape[-1] != b.shape[0]:
        return None
    return b


def bias_row(c, n):
    """Constant ``c`` as a float32 row of ``n`` added to every row of a
    product (one value, or n values along the last axis), else None."""
    if c.dtype != np.float32 or c.ndim > 2 or not (c.size == 1 or (c.size == n and
                                                                   c.shape[-1] == n)):
        return None
    return np.broadcast_to(c.reshape(-1), (n,))


def _bind_matmul(node, consts, rec):
    """For one signature: numpy's matmul without the size check (it passed
    when the signature was recorded); with constant 2-D float32 B (a dense
    layer's weights) and A of rank >= 2, one packed product over all rows
    (``fastlstm.kernels.dense``; numpy's matmul treats A [T, 1, K] as T
    products of one row: 293 us for the speech model's [250, 1, 256] @
    [256, 29] head)."""
    if not isinstance(rec.get(node.inputs[0]), np.ndarray):
        return None
    if node.inputs[1] not in consts:
        return np.matmul if isinstance(rec.get(node.inputs[1]), np.ndarray) else None
    w = dense_weights(node, consts, rec)
    if w is None:
        return None
    from ..kernels.dense import Dense
    dense = Dense(w)
    return lambda x, *rest: dense(x)


@op("MatMul", since=1, inputs=(2, 2), bind=_bind_matmul)
def matmul(node, ins, n):
    """Matrix product with numpy's batching rules."""
    limits.check_matmul(ins[0], ins[1], node)      # ([N, 1] @ [1, N] is N*N)
    return [np.matmul(ins[0], ins[1])]


def _gemm_parts(node, consts, rec):
    """(B as [K, N] scaled by alpha, C scaled by beta or None, transA) of a
    Gemm with constant B (and C) and float32 A and B, else None."""
    b_name = node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if b_name not in consts or (c_name and c_name not in consts):
        return None
    a = rec.get(node.inputs[0])
    b = consts[b_name]
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or b.dtype != np.float32 or \
            b.ndim != 2:
        return None
    if attr(node, "transB", 0):
        b = b.T
    alpha = attr(node, "alpha", 1.0)
    b = np.ascontiguousarray(b * np.float32(alpha) if alpha != 1.0 else b)
    c = None
    if c_name:
        c = consts[c_name]
        beta = attr(node, "beta", 1.0)
        c = c * np.asarray(beta, c.dtype) if beta != 1.0 else c
    return b, c, bool(attr(node, "transA", 0))


def gemm_weights(node, consts, rec):
    """(W [K, N], bias row or None) of a Gemm that one packed product runs
    (``fastlstm.kernels.dense``): constant B and C, C a bias row or one value
    (or absent), A [M, K] float32 not transposed; else None."""
    parts = _gemm_parts(node, consts, rec)
    if parts is None or parts[2] or rec[node.inputs[0]].ndim != 2:
        return None
    b, c, _ = parts
    row = None if c is None else bias_row(c, b.shape[1])
    if c is not None and row is None:
        return None
    return b, row


def _bind_gemm(node, consts, rec):
    """Constant B (and C): transposed and scaled once; with C a bias row (or
    one value) a run is one packed product (``fastlstm.kernels.dense``), else
    one matmul and one add."""
    parts = _gemm_parts(node, consts, rec)
    if parts is None:
        return None
    b, c, trans_a = parts
    row = None if c is None else bias_row(c, b.shape[1])
    if c is None or row is not None:
        from ..kernels.dense import Dense
        dense = Dense(b, row)
        if trans_a:
            return lambda x, *rest: dense(x.T)
        return lambda x, *rest: dense(x)
    if trans_a:
        return lambda x, *rest: np.matmul(x.T, b) + c
    return lambda x, *rest: np.matmul(x, b) + c


@op("Gemm", since=7, attrs=["alpha", "beta", "transA", "transB"], inputs=(2, 3),
    bind=_bind_gemm)
def gemm(node, ins, n):
    """alpha * A' B' + beta * C, A' and B' optionally transposed."""
    a, b = ins[0], ins[1]
    if attr(node, "transA", 0):
        a = a.T
    if attr(node, "transB", 0):
        b = b.T
    limits.check_matmul(a, b, node)
    y = np.matmul(a, b)
    alpha = attr(node, "alpha", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if len(ins) > 2 and ins[2] is not None:
        beta = attr(node, "beta", 1.0)
        c = ins[2] if beta == 1.0 else ins[2] * np.asarray(beta, ins[2].dtype)
        y = y + c
    return [y]
