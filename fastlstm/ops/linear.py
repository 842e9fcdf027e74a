"""Matrix products: MatMul and Gemm (the dense layers of model heads)."""
import numpy as np

from .. import limits
from .table import attr, op


@op("MatMul", since=1, inputs=(2, 2))
def matmul(node, ins, n):
    """Matrix product with numpy's batching rules."""
    limits.check_matmul(ins[0], ins[1], node)      # ([N, 1] @ [1, N] is N*N)
    return [np.matmul(ins[0], ins[1])]


@op("Gemm", since=7, attrs=["alpha", "beta", "transA", "transB"], inputs=(2, 3))
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
