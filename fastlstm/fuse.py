"""Fused elementwise loops: one compiled function per chain of float ops.

A chain of elementwise float32 ops (each declaring ``scalar=`` in the op
table) over tensors of one shape becomes a single loop that reads each input
once and writes only the chain's result, instead of one numpy call and one
temporary per op.  Inputs are either of the output's shape or one element
(a scalar read once).  The loop's source is generated from the ops' scalar
templates and compiled by Numba once per distinct source (kept in memory;
also on disk when the kernel cache is on, as a generated module file).
"""
import hashlib
import importlib.util
import os
import sys
import threading

import numpy as np

from . import config

_lock = threading.Lock()
_kernels = {}


def _cache_dir():
    return os.path.join(config.kernel_cache_dir(), "fused")


def _helpers_digest():
    """Hash of the sources a fused loop calls into: part of every loop's source,
    so that a change to them makes new files (Numba's cache does not follow
    a function's callees into other files)."""
    h = hashlib.sha256()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
    for name in ("scalar.py", "activations.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


_HELPERS = _helpers_digest()


def header(what, params):
    """The first lines of a generated kernel module: a comment naming it and
    the digest of the helpers it calls (a change to them makes a new file),
    the imports, and ``def fused(params):`` (the name ``compile_kernel``
    takes)."""
    return [f"# fastlstm {what}; helpers {_HELPERS}",
            "import math",
            "import numpy as np",
            "from numba import njit",
            "from fastlstm import config",
            "from fastlstm.kernels.scalar import *  # noqa",
            "",
            "@njit(**config.jit_options())",
            f"def fused({params}):"]


def kernel_source(n_inputs, scalar_inputs, body, result, n_const=0, strided=(), rank=1):
    """Python source of a fused loop ``fused(out, x0, .., C)``.

    n_inputs: how many input arrays ``x0``..; scalar_inputs: the positions
    read as one element; n_const: rows of the constant block ``C`` (each a
    constant of the output's size, read as ``c0``.. at the current element);
    body: lines computing temporaries from ``a0``.. and ``c0``..; result: the
    expression stored in ``out``.  Constants of one element are literals in
    the body: every array argument costs dispatch time on each call.

    strided: positions of inputs that are views of other strides (the real
    and imaginary halves of an STFT sliced out of one conv output, say),
    read in place by their ``rank`` indices: the loop then nests one level
    per axis of ``out``.  (A copy of each to C order first cost more than
    the fused loop: Silero's sequence variant, two [293, 129, 4] slices of
    a [293, 258, 5] tensor.)"""
    args = "".join(f", x{k}" for k in range(n_inputs)) + (", C" if n_const else "")
    lines = header("fused elementwise loop", f"out{args}") + ["    o = out.reshape(-1)"]
    for k in range(n_inputs):
        if k in scalar_inputs:
            lines.append(f"    a{k} = x{k}.reshape(-1)[0]")
        elif k not in strided:
            lines.append(f"    v{k} = x{k}.reshape(-1)")
    if strided:
        pad = "    "
        lines.append("    i = 0")
        for d in range(rank):
            lines.append(f"{pad}for j{d} in range(out.shape[{d}]):")
            pad += "    "
        at = ", ".join(f"j{d}" for d in range(rank))
    else:
        pad = "        "
        lines.append("    for i in range(o.size):")
    for k in range(n_inputs):
        if k in strided:
            lines.append(f"{pad}a{k} = x{k}[{at}]")
        elif k not in scalar_inputs:
            lines.append(f"{pad}a{k} = v{k}[i]")
    for k in range(n_const):
        lines.append(f"{pad}c{k} = C[{k}, i]")
    for line in body:
        lines.append(f"{pad}{line}")
    lines.append(f"{pad}o[i] = {result}")
    if strided:
        lines.append(f"{pad}i += 1")
    return "\n".join(lines) + "\n"


def compile_kernel(source):
    """The ``fused`` function of ``source``, compiled once per process."""
    fn = _kernels.get(source)
    if fn is not None:
        return fn
    with _lock:
        fn = _kernels.get(source)
        if fn is not None:
            return fn
        digest = hashlib.sha256(source.encode()).hexdigest()[:20]
        name = f"fastlstm_fused_{digest}"
        module = None
        if config.NUMBA_CACHE:
            try:
                d = _cache_dir()
                os.makedirs(d, exist_ok=True)
                path = os.path.join(d, name + ".py")
                if not os.path.exists(path):
                    tmp = f"{path}.{os.getpid()}.tmp"
                    with open(tmp, "w") as f:
                        f.write(source)
                    os.replace(tmp, path)
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            except OSError:
                module = None
        if module is None:
            ns = {}
            exec(compile(source, f"<{name}>", "exec"), ns)
            fn = ns["fused"]
        else:
            fn = module.fused
        _kernels[source] = fn
        return fn


def scalar_expr(decl, node, args):
    """The per-element expression of ``node`` over argument expressions (its
    present inputs, in order), or None when this node cannot be fused.  An op
    whose forms differ (Clip's bounds are attributes, then optional inputs)
    declares ``scalar`` as a function ``(node, args) -> expression or None``."""
    if callable(decl.scalar):
        return decl.scalar(node, args)
    attrs = {}
    for key, default in decl.scalar_attrs:
        v = float(node.attrs.get(key, default))
        attrs[key] = f"np.float32({v!r})"
    return decl.scalar.format(*args, **attrs)
