"""Every environment-driven default of fastlstm, read in one place.

Environment variables
---------------------
FASTLSTM_NUM_THREADS   default intra-op thread count (int, >= 1).  Default 1.
FASTLSTM_CACHE         "0" turns off Numba's on-disk kernel cache.  Default on.
FASTLSTM_THREAD_MIN_WORK  multiply-adds per step below which one thread runs a layer.
"""
import os


def _env_int(name, default, minimum=None):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"environment variable {name}={value} must be >= {minimum}")
    return value


def _env_flag(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


#: Hidden units per tile: one AVX-512 register of float32.  Weights are packed
#: in panels of TILE units with all gates of those units side by side.
TILE = 16

#: Numba options shared by every kernel.  ``contract`` lets LLVM fuse a*b+c into
#: FMA; nothing that changes NaN/Inf semantics (nnan/ninf) is turned on, because
#: a NaN in the input must reach the output.
NUMBA_FASTMATH = frozenset({"contract", "arcp"})
NUMBA_CACHE = _env_flag("FASTLSTM_CACHE", True)
NUMBA_ERROR_MODEL = "numpy"

#: Multiply-adds per time step (all rows, all directions) below which a layer
#: runs on one thread even when the session has more: waking a worker and
#: meeting it at a barrier every step costs about a microsecond.
THREAD_MIN_WORK = _env_int("FASTLSTM_THREAD_MIN_WORK", 100_000, minimum=0)


def default_num_threads():
    """Thread count used when SessionOptions does not set one."""
    return _env_int("FASTLSTM_NUM_THREADS", 1, minimum=1)
