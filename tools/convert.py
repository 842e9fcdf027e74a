"""Convert an ONNX model to a .fastlstm file (same as `fastlstm convert`).

    python tools/convert.py model.onnx -o model.fastlstm [--no-verify]
"""
import sys

from fastlstm.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert"] + sys.argv[1:]))
