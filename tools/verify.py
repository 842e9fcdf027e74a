"""Verify a model against onnxruntime (same as `fastlstm verify`).

    python tools/verify.py model.onnx
    python tools/verify.py model.fastlstm --reference model.onnx
"""
import sys

from fastlstm.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify"] + sys.argv[1:]))
