"""How many real-time streams one core sustains: fastlstm.StreamPool against one
onnxruntime session per stream and onnxruntime with batched state handled in
Python, on Silero VAD (16 kHz) and an LSTM tagger (H=256).

    python benchmarks/stream_capacity.py                 # the whole table
    python benchmarks/stream_capacity.py --case silero --engine fastlstm --verbose

The same as ``fastlstm bench --streams``; the code is ``fastlstm/bench_streams.py``
(each engine in a process of its own pinned to one core; see its docstring).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastlstm.bench_streams import main  # noqa: E402

if __name__ == "__main__":
    main()
