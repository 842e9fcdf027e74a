"""fastlstm.bench_lines and benchmarks/graph_breakdown.py: each engine's time
by line or node, grouped by kind of work."""
import os
import subprocess
import sys

import numpy as np

import fastlstm
from fastlstm import bench_lines
from fastlstm.bench_graphs import graph_cases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kinds():
    assert bench_lines.kind("  [conv_wino4]") == "conv"
    assert bench_lines.kind("Conv") == "conv"
    assert bench_lines.kind("  [_bind_pool.<locals>.into]") == "pool"
    assert bench_lines.kind("MaxPool") == "pool"
    assert bench_lines.kind("  [Layer.direct]") == "recurrent"
    assert bench_lines.kind("GRU") == "recurrent"
    assert bench_lines.kind("  [dense_into]") == "product"
    assert bench_lines.kind("Add") == "other"


def test_line_and_node_times_of_a_crnn():
    cases, missing = graph_cases(["crnn-100"])
    assert not missing, missing
    case = cases["crnn-100"]
    feed = dict(np.load(case["feed"]))
    sess = fastlstm.InferenceSession(case["model"])
    lines = bench_lines.line_times(sess, feed, repeats=2)
    kinds = bench_lines.by_kind(lines)
    assert lines and all(t >= 0 for t, _ in lines)
    assert kinds["conv"] > 0 and kinds["recurrent"] > 0
    # (three of its four MaxPools run inside their conv's kernel; the last
    # conv's F(2x2) tiles would split its 4 x 1 windows)
    assert kinds.get("pool", 0) < 0.1 * kinds["conv"]
    nodes = bench_lines.ort_node_times(case["model"], feed, repeats=2)
    ops = {op for _, op, _ in nodes}
    assert {"LSTM", "MaxPool"} <= ops and all(t > 0 for t, _, _ in nodes)
    assert bench_lines.by_kind([(t, op) for t, op, _ in nodes])["recurrent"] > 0


def test_graph_breakdown_script():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "graph_breakdown.py"),
                          "--cases", "add-chain", "--rounds", "1", "--repeats", "2",
                          "--lines", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| other |" in out.stdout and "| total |" in out.stdout
    assert "fastlstm lines" in out.stdout and "onnxruntime nodes" in out.stdout
