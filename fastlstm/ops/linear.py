"""Matrix products: MatMul and Gemm (the dense layers of model heads)."""
import numpy as np

from .. import limits
from .table import attr, op


def _bind_matmul(node, consts, rec):
    """For one signature: numpy's matmul without the size check (it passed
    when the signature was recorded); and with constant 2-D B (a dense
    layer's weights) and A of rank >= 2, one [rows, K] @ [K, N] product.  numpy's matmul treats A [T, 1, K] as T
    products of one row each (measured: 293 us for the speech model's head,
    [250, 1, 256] @ [256, 29], against 18 us as one product)."""
    b = consts.get(node.inputs[1])
    a = rec.get(node.inputs[0])
    if not isinstance(a, np.ndarray):
        return None
    if b is None:   # shapes fixed by the signature: the size check passed when recorded
        return np.matmul if isinstance(rec.get(node.inputs[1]), np.ndarray) else None
    if b.ndim != 2 or a.ndim < 2:
        return None
    if a.dtype != np.float32 or b.dtype != np.float32 or a.shape[-1] != b.shape[0]:
        return None
    b = np.ascontiguousarray(b)
    K = b.shape[0]
    shape = a.shape[:-1] + (b.shape[1],)
    return lambda x, *rest: np.dot(x.reshape(-1, K), b).reshape(shape)


@op("MatMul", since=1, inputs=(2, 2), bind=_bind_matmul)
def matmul(node, ins, n):
    """Matrix product with numpy's batching rules."""
    limits.check_matmul(ins[0], ins[1], node)      # ([N, 1] @ [1, N] is N*N)
    return [np.matmul(ins[0], ins[1])]


def _bind_gemm(node, consts, rec):
    """Constant B (and C): transposed and scaled once; a run is one matmul and
    one add."""
    b_name = node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if b_name not in consts or (c_name and c_name not in consts):
        return None
    a = rec[node.inputs[0]]
    b = consts[b_name]
    if a.dtype != np.float32 or b.dtype != np.float32:
        return None
    if attr(node, "transB", 0):
        b = b.T
    alpha = attr(node, "alpha", 1.0)
    b = np.ascontiguousarray(b * np.float32(alpha) if alpha != 1.0 else b)
    trans_a = bool(attr(node, "transA", 0))
    if c_name:
        c = consts[c_name]
        beta = attr(node, "beta", 1.0)
        c = c * np.asarray(beta, c.dtype) if beta != 1.0 else c
        if trans_a:
            return lambda x, *rest: np.matmul(x.T, b) + c
        return lambda x, *rest: np.matmul(x, b) + c
    if trans_a:
        return lambda x, *rest: np.matmul(x.T, b)
    return lambda x, *rest: np.matmul(x, b)


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
