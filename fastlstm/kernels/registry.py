"""The input-projection GEMM as a C function address for the front end.

The step kernels' addresses come with each op's descriptor
(``fastlstm.ops.recurrent_ops``).  Importing this module compiles the GEMM, or
loads it from Numba's on-disk cache.
"""
from numba import cfunc

from .common import GEMM_SIG
from .gemm import gemm_bias
from .. import config


@cfunc(GEMM_SIG, **config.jit_options())
def _gemm(M, K, N, c0, c1, x, wt, bias, out):
    gemm_bias(M, K, N, c0, c1, x, wt, bias, out)


GEMM_ADDRESS = _gemm.address

