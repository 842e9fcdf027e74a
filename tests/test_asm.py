"""The generated elementwise loops vectorize: read from the machine code, as the
kernels are (a libm call per element would keep a loop scalar).  The loop is
compiled here without the on-disk cache (Numba gives no assembly for cached
code)."""
import re

import numpy as np

from fastlstm import fuse

PACKED = re.compile(r"\tv(?:mul|add|sub|fmadd\d+|div)ps\s+%[yz]mm")


def test_fused_loop_is_vectorized_without_calls():
    src = fuse.kernel_source(3, set(), ["t0 = sigmoid(a0)", "t1 = tanh(a1)",
                                        "t2 = exp(a2)"], "t0 * t1 + t2")
    assert "@njit(**config.jit_options(" in src
    src = src.replace("@njit(**config.jit_options(", "@njit(**config.jit_options(cache=False, ")
    ns = {}
    exec(compile(src, "<fused loop>", "exec"), ns)
    k = ns["fused"]
    a = [np.random.default_rng(0).random((1, 256), np.float32) for _ in range(4)]
    k(*a)
    lines = k.inspect_asm(k.signatures[0]).split("\n")
    packed = [i for i, line in enumerate(lines) if PACKED.search(line)]
    assert len(packed) >= 10        # packed float arithmetic on ymm/zmm registers
    calls = [i for i, line in enumerate(lines) if "\tcall" in line]
    assert not [c for c in calls if packed[0] < c < packed[-1]]     # none in the loop
