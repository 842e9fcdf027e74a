"""fastlstm against onnxruntime (and PyTorch if installed), side by side.

    python benchmarks/compare.py                  # the target table, 1 and 2 threads
    python benchmarks/compare.py --sweep          # plus the B/T/H sweep
    python benchmarks/compare.py --json out.json --png out.png

Same as ``fastlstm bench --targets benchmarks/targets.json``: the performance
issue's target ratios (targets.json, beside this file) are shown beside the
measured ones.  See fastlstm/bench.py for how it measures.
"""
import os
import sys

from fastlstm.cli import main

TARGETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.json")

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--targets" not in argv:
        argv += ["--targets", TARGETS]
    sys.exit(main(["bench"] + argv))
