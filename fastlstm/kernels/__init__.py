"""Numba kernels.

``activations``  vectorizable float32 exp/sigmoid/tanh and the ONNX activation list
``simd``         register tiles written in LLVM IR (4 rows x 64 columns of FMAs)
``irvec``        building blocks for the kernels written as LLVM IR on float32 vectors
``gemm``         products against packed weight panels, built on those tiles
``common``       the step kernels' C signature and parameter blocks (numpy dtypes)
``lstm``/``gru``/``rnn``  one recurrent step each: recurrent product, then gate math
``conv_taps``    Convs of one input channel per group, small kernels, taps unrolled
``conv_lanes``   Convs of few output channels, 8 of them across a vector's lanes
``dft``          Convs that are an STFT (a windowed DFT basis as weights), as FFTs
``dense``        dense layers of model heads (x @ W + b, W packed once) on that GEMM
``registry``     the input GEMM's ``cfunc`` address for the Cython front end (the step
                 kernels' come with each op's descriptor, ``ops.recurrent_ops``)

Numba's on-disk cache keys a compiled function on its own source file only.
A step kernel inlines code from other files (activations, simd tiles, gemm,
config), so after one of those changes it would keep loading its old machine
code.  ``clear_stale_cache`` runs on import: it keeps a digest of every kernel
source beside the cache and clears the cache when the digest changes.  The
cache is in a per-user folder (``fastlstm.config.kernel_cache_dir``), not in
the package.
"""
import glob
import hashlib
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_STAMP = "fastlstm-kernel-sources.sha256"


def clear_stale_cache(src_dirs=(_HERE,), extra_files=(), cache_dir=None):
    """Remove the cached kernels in ``cache_dir`` if any ``.py`` file in
    ``src_dirs`` (or any of ``extra_files``) changed since they were cached.
    Returns True when it removed them.  Never raises for I/O problems: the
    cache is an optimisation."""
    cache_dir = cache_dir or os.path.join(src_dirs[0], "__pycache__")
    h = hashlib.sha256()
    files = sorted(os.path.join(d, n) for d in src_dirs for n in os.listdir(d)
                   if n.endswith(".py")) + sorted(extra_files)
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        h.update(os.path.basename(path).encode() + b"\0" + data + b"\0")
    digest = h.hexdigest()
    stamp = os.path.join(cache_dir, _STAMP)
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return False
    except OSError:
        pass
    removed = False
    for path in glob.glob(os.path.join(cache_dir, "*.nbi")) + \
            glob.glob(os.path.join(cache_dir, "*.nbc")):
        try:
            os.remove(path)
            removed = True
        except OSError:
            pass
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{stamp}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(digest)
        os.replace(tmp, stamp)
    except OSError:
        pass
    return removed


def _clear_stale():
    from .. import config
    if config.NUMBA_CACHE:      # the cache lives in config.kernel_cache_dir()
        clear_stale_cache(extra_files=(os.path.join(os.path.dirname(_HERE), "config.py"),),
                          cache_dir=config.numba_cache_path(os.path.join(_HERE, "lstm.py")))


_clear_stale()
