"""Matrix products: MatMul and Gemm (the dense layers of model heads)."""
import numpy as np

from .. import limits
from .table import attr, op


def _bind_matmul(node, consts, rec):
    """For one signature: numpy's matmul without the size check (it passed
    when the signature was recorded); with constant 2-D float32 B (a dense
    layer's weights) and A of rank >= 2, one packed product over all rows
    (``fastlstm.kernels.dense``; numpy's matmul treats A [T, 1, K] as T
    products of one row: 293 us for the speech model's [250, 1, 256] @
    [256, 29] head)."""
    b = consts.get(node.inputs[1])
    a = rec.get(node.inputs[0])
    if not isinstance(a, np.ndarray):
        return None
    if b is None:
        return np.matmul if isinstance(rec.get(node.inputs[1]), np.ndarray) else None
    if b.ndim != 2 or a.ndim < 2:
        return None
    if a.dtype != np.float32 or b.dtype != np.float32 or a.shape[-1] != b.shape[0]:
        return None
    from ..kernels.dense import Dense
    dense = Dense(b)
    return lambda x, *rest: dense(x)


@op("MatMul", since=1, inputs=(2, 2), bind=_bind_matmul)
def matmul(node, ins, n):
    """Matrix product with numpy's batching rules."""
    limits.check_matmul(ins[0], ins[1], node)      # ([N, 1] @ [1, N] is N*N)
    return [np.matmul(ins[0], ins[1])]


def _bind_gemm(node, consts, rec):
    """Constant B (and C): transposed and scaled once; with C a bias row (or
    one value) a run is one packed product (``fastlstm.kernels.dense``), else
    one matmul and one add."""
    b_name = node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if b_name not in consts or (c_name and c_name not in consts):
        return None
    a = rec[node.inputs[0]]
    b = consts[b_name]
    if a.dtype != np.float32 or b.dtype != np.float32 or b.ndim != 2:
        return None
    if attr(node, "transB", 0):
        b = b.T
    alpha = attr(node, "alpha", 1.0)
    b = np.ascontiguousarray(b * np.float32(alpha) if alpha != 1.0 else b)
    trans_a = bool(attr(node, "transA", 0))
    c = None
    if c_name:
        c = consts[c_name]
        beta = attr(node, "beta", 1.0)
        c = c * np.asarray(beta, c.dtype) if beta != 1.0 else c
    N = b.shape[1]
    if c is None or (c.dtype == np.float32 and c.ndim <= 2
                     and (c.size == 1 or (c.size == N and c.shape[-1] == N))):
        from ..kernels.dense import Dense
        dense = Dense(b, None if c is None else np.broadcast_to(c.reshape(-1), (N,)))
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
