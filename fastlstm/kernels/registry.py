"""The compiled entry points, by op, as C function addresses for the front end.

Importing this module compiles the kernels, or loads them from Numba's on-disk
cache (in ``config.kernel_cache_dir()``, keyed on source, signature and CPU).
"""
from numba import cfunc

from . import gru, lstm, rnn
from .common import GEMM_SIG
from .gemm import gemm_bias
from .. import config


@cfunc(GEMM_SIG, nopython=True, cache=config.NUMBA_CACHE,
       fastmath=set(config.NUMBA_FASTMATH), error_model=config.NUMBA_ERROR_MODEL)
def _gemm(M, K, N, c0, c1, x, wt, bias, out):
    gemm_bias(M, K, N, c0, c1, x, wt, bias, out)


GEMM_ADDRESS = _gemm.address

#: op_type -> (step function address, gates per W panel, ws_floats(batch, hp))
STEPS = {
    "LSTM": (lstm.lstm_step.address, lstm.GATES, lstm.ws_floats),
    "GRU": (gru.gru_step.address, gru.GATES, gru.ws_floats),
    "RNN": (rnn.rnn_step.address, rnn.GATES, rnn.ws_floats),
}
