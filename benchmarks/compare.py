"""fastlstm against onnxruntime (and PyTorch if installed), side by side.

    python benchmarks/compare.py                  # the target table, 1 and 2 threads
    python benchmarks/compare.py --sweep          # plus the B/T/H sweep
    python benchmarks/compare.py --json out.json --png out.png

Same as ``fastlstm bench``; see fastlstm/bench.py for how it measures.
"""
import sys

from fastlstm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench"] + sys.argv[1:]))
