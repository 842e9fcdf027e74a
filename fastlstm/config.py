"""Every environment-driven default of fastlstm, read in one place.

Environment variables
---------------------
FASTLSTM_NUM_THREADS   default intra-op thread count (int, >= 1).  Default 1.
FASTLSTM_CACHE         "0" turns off Numba's on-disk kernel cache.  Default on.
FASTLSTM_CACHE_DIR     folder of that cache.  Default ``$XDG_CACHE_HOME/fastlstm``,
                       else ``~/.cache/fastlstm`` (never inside the installed
                       package: a cache there outlives ``pip uninstall``).
FASTLSTM_THREAD_MIN_WORK  multiply-adds per step below which one thread runs a
                       layer (a bidirectional one: unless its call has 16x that).

A variable that cannot be read raises :class:`fastlstm.InvalidInput` naming it
and saying what it may be.
"""
import os

from .errors import InvalidInput


def _env_int(name, default, minimum=None):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    allowed = "an integer" if minimum is None else f"an integer >= {minimum}"
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"environment variable {name}={raw!r} must be {allowed}") from None
    if minimum is not None and value < minimum:
        raise InvalidInput(f"environment variable {name}={value} must be {allowed}")
    return value


def _env_flag(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


#: Hidden units per tile: one AVX-512 register of float32.  Weights are packed
#: in panels of TILE units with all gates of those units side by side.
TILE = 16

#: Columns of a packed weight panel: the widest register tile (4 vectors of
#: TILE floats), read front to back by ``kernels.gemm``.  Threads that split a
#: step take whole panels (PANEL // TILE tiles each unit of work).
PANEL = 64

#: Numba options shared by every kernel.  ``contract`` lets LLVM fuse a*b+c into
#: FMA; nothing that changes NaN/Inf semantics (nnan/ninf) is turned on, because
#: a NaN in the input must reach the output.
NUMBA_FASTMATH = frozenset({"contract", "arcp"})
NUMBA_CACHE = _env_flag("FASTLSTM_CACHE", True)
NUMBA_ERROR_MODEL = "numpy"


def jit_options(**overrides):
    """The Numba options of every kernel, as keyword arguments for ``njit`` and
    ``cfunc`` (a fresh dict: Numba wants ``fastmath`` as a set).  ``overrides``
    replace single options where a function needs others, and say so there."""
    opts = dict(nogil=True, cache=NUMBA_CACHE, fastmath=set(NUMBA_FASTMATH),
                error_model=NUMBA_ERROR_MODEL)
    opts.update(overrides)
    return opts


def kernel_cache_dir():
    """The folder of fastlstm's compiled-kernel cache (see FASTLSTM_CACHE_DIR)."""
    d = os.environ.get("FASTLSTM_CACHE_DIR")
    if d:
        return os.path.abspath(os.path.expanduser(d))
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):    # the XDG spec ignores relative paths
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastlstm")


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _install_cache_locator(root):
    """Make Numba cache fastlstm's functions under ``root``, not beside their sources.

    Numba finds a function's cache folder by asking its locator classes in
    turn; the first answers ``__pycache__`` beside the source file, which for
    an installed package is inside site-packages.  A locator put first in that
    list claims only functions whose source is in this package and places
    their cache in ``root/<folder name>_<hash of the folder's path>`` (Numba's
    own naming for NUMBA_CACHE_DIR); everything else keeps Numba's default,
    so this does not move a user's own caches.  The cache stays keyed as
    Numba keys it (source file stamp, signature, CPU), plus the source digest
    of ``fastlstm.kernels.clear_stale_cache``.  Returns the locator class, or
    None when this Numba does not have the hooks (then NUMBA_CACHE_DIR's
    setting is used if the user has not set it).
    """
    from numba.core import caching
    from numba.core import config as nconfig
    base = getattr(caching, "UserProvidedCacheLocator", None) or \
        getattr(caching, "_UserProvidedCacheLocator", None)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if base is None or impl is None or not isinstance(
            getattr(impl, "_locator_classes", None), list):
        if not nconfig.CACHE_DIR:
            nconfig.CACHE_DIR = os.path.join(root, "numba")
        return None
    for cls in impl._locator_classes:
        if getattr(cls, "_fastlstm_root", None) is not None:
            return cls

    class FastLSTMCacheLocator(base):
        _fastlstm_root = root

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(self._fastlstm_root,
                                            self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.abspath(py_file).startswith(_PACKAGE_DIR):
                return None
            # skip base's check of NUMBA_CACHE_DIR; keep the source-file checks
            return super(base, cls).from_function(py_func, py_file)

    impl._locator_classes.insert(0, FastLSTMCacheLocator)
    return FastLSTMCacheLocator


def numba_cache_path(py_file):
    """The folder where Numba caches the functions of source file ``py_file``."""
    locator = _CACHE_LOCATOR
    if locator is not None:
        return os.path.join(locator._fastlstm_root, locator.get_suitable_cache_subpath(py_file))
    from numba.core import config as nconfig
    folder = os.path.dirname(os.path.abspath(py_file))
    if not nconfig.CACHE_DIR:
        return os.path.join(folder, "__pycache__")
    import hashlib
    return os.path.join(nconfig.CACHE_DIR, os.path.basename(folder) + "_" +
                        hashlib.sha1(folder.encode()).hexdigest())


_CACHE_LOCATOR = _install_cache_locator(kernel_cache_dir()) if NUMBA_CACHE else None

#: Multiply-adds per time step (all rows, all directions) below which a layer
#: runs on one thread even when the session has more: waking a worker and
#: meeting it at a barrier every step costs about a microsecond.  A
#: bidirectional layer's directions run on their own threads and meet once
#: per call, so they split too when the call's work is 16 times this (a
#: speech model's GRU layers, H = 128, 98304 a step over 250 steps, ran on
#: one thread before; a worker asleep takes 50 us or more to wake here).
THREAD_MIN_WORK = _env_int("FASTLSTM_THREAD_MIN_WORK", 100_000, minimum=0)


#: "0" turns off per-signature specialisation (``fastlstm.specialize``): every
#: run takes the general, node-by-node path.
SPECIALISE = _env_flag("FASTLSTM_SPECIALISE", True)


def default_num_threads():
    """Thread count used when SessionOptions does not set one."""
    return _env_int("FASTLSTM_NUM_THREADS", 1, minimum=1)
