"""Measure cold start: a fresh process from `import fastlstm` to the first result.

Runs the bundled example twice in new processes sharing one kernel cache
directory: first with the cache empty (kernels compile), then warm (kernels
load from disk).  Run:  python tools/cold_start.py
"""
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np
import fastlstm
from fastlstm.cli import EXAMPLE_MODEL
s = fastlstm.InferenceSession(EXAMPLE_MODEL)
s.run(None, {"X": np.zeros((1, 1, 64), np.float32),
             "initial_h": np.zeros((2, 1, 128), np.float32),
             "initial_c": np.zeros((2, 1, 128), np.float32)})
print(f"{time.perf_counter() - t0:.3f}")
"""


def main():
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("empty kernel cache", "warm kernel cache", "warm kernel cache"):
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()
            print(f"{label:20s} {float(out):7.2f} s to first result")


if __name__ == "__main__":
    main()
