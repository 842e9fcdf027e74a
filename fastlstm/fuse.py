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
    for name in ("scalar.py", "activations.py", "common.py", "conv_taps.py", "conv_lanes.py",
                 "irvec.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


_HELPERS = _helpers_digest()


def header(what, params, contract=True):
    """The first lines of a generated kernel module: a comment naming it and
    the digest of the helpers it calls (a change to them makes a new file),
    the imports, and ``def fused(params):`` (the name ``compile_kernel``
    takes).  ``contract=False``: the function's own arithmetic is not fused
    into FMAs (the helpers it calls keep their own flags)."""
    opts = "" if contract else "fastmath={'arcp'}"
    return [f"# fastlstm {what}; helpers {_HELPERS}",
            "import math",
            "import numpy as np",
            "from numba import njit",
            "from fastlstm import config",
            "from fastlstm.kernels.scalar import *  # noqa",
            "from fastlstm.kernels.common import fptr",
            "",
            f"@njit(**config.jit_options({opts}))",
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
    read in place, all of ``rank`` axes (the caller merges the axes it can,
    see ``collapse``): the loop then nests one level per axis, and reads
    every input through its data pointer (``kernels.common.fptr``), the
    innermost axis as a unit-stride run where the strides allow it (a
    version of the loop LLVM vectorizes; Silero's [256, 129, 4] halves of a
    [256, 258, 4] tensor, merged to [256, 516]: 382 -> about 40 us).  A copy
    of each to C order first cost more than the fused loop."""
    args = "".join(f", x{k}" for k in range(n_inputs)) + (", C" if n_const else "")
    # (no FMA contraction: each op rounds as the op it stands for would, one
    # at a time; contracted, the product and sum of an STFT's magnitude
    # sqrt(re^2 + im^2) came out an ulp apart at different batch sizes, in
    # 44 of Silero's 516 magnitudes between batch 1 and 37, so a stream's
    # result depended on the batch it ran in)
    lines = header("fused elementwise loop", f"out{args}", contract=False) + \
        ["    o = out.reshape(-1)"]
    for k in range(n_inputs):
        if k in scalar_inputs:
            lines.append(f"    a{k} = x{k}.reshape(-1)[0]")
        elif k not in strided:
            lines.append(f"    v{k} = x{k}.reshape(-1)")
    if not strided:
        lines.append("    for i in range(o.size):")
        for k in range(n_inputs):
            if k not in scalar_inputs:
                lines.append(f"        a{k} = v{k}[i]")
        for k in range(n_const):
            lines.append(f"        c{k} = C[{k}, i]")
        lines.extend(f"        {line}" for line in body)
        lines.append(f"        o[i] = {result}")
        return "\n".join(lines) + "\n"
    # every read through a pointer, at an offset Numba need not test
    first = min(strided)
    last = rank - 1
    lines.append("    po = fptr(o)")
    for k in range(n_inputs):
        if k in strided:
            lines.append(f"    q{k} = fptr(x{k})")
            lines += [f"    s{k}_{d} = x{k}.strides[{d}] // 4" for d in range(rank)]
        elif k not in scalar_inputs:
            lines.append(f"    q{k} = fptr(v{k})")
    for k in range(n_const):
        lines.append(f"    r{k} = fptr(C[{k}])")
    unit = " and ".join(f"s{k}_{last} == 1" for k in sorted(strided))
    lines.append(f"    unit = {unit}")
    lines.append(f"    n = x{first}.shape[{last}]")
    lines.append("    i = 0")
    pad = "    "
    for d in range(last):
        lines.append(f"{pad}for j{d} in range(x{first}.shape[{d}]):")
        pad += "    "
    for k in sorted(strided):
        offs = " + ".join(f"j{d} * s{k}_{d}" for d in range(last)) or "0"
        lines.append(f"{pad}e{k} = {offs}")

    def inner(step):
        out = [f"{pad}    for jj in range(n):"]
        for k in range(n_inputs):
            if k in strided:
                out.append(f"{pad}        a{k} = q{k}[e{k} + jj{step(k)}]")
            elif k not in scalar_inputs:
                out.append(f"{pad}        a{k} = q{k}[i + jj]")
        out += [f"{pad}        c{k} = r{k}[i + jj]" for k in range(n_const)]
        out += [f"{pad}        {line}" for line in body]
        out.append(f"{pad}        po[i + jj] = {result}")
        return out
    lines.append(f"{pad}if unit:")
    lines += inner(lambda k: "")
    lines.append(f"{pad}else:")
    lines += inner(lambda k: f" * s{k}_{last}")
    lines.append(f"{pad}i += n")
    return "\n".join(lines) + "\n"


def collapse(shape, strided_strides):
    """The shape ``shape`` merged where every strided input allows it: axes
    d and d+1 become one when each input's stride of d is its stride of
    d+1 times the size of d+1 (byte strides, ``strided_strides`` one tuple
    per input).  Reshaping each input to the result is then a view."""
    dims = [int(shape[0])] if len(shape) else []
    st = [[s[0]] for s in strided_strides] if len(shape) else [[] for _ in strided_strides]
    for d in range(1, len(shape)):
        if all(s[-1] == t[d] * shape[d] for s, t in zip(st, strided_strides)):
            dims[-1] *= int(shape[d])
            for s, t in zip(st, strided_strides):
                s[-1] = t[d]
        else:
            dims.append(int(shape[d]))
            for s, t in zip(st, strided_strides):
                s.append(t[d])
    return tuple(dims)


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
