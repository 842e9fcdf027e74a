"""Where a graph's time goes, in both engines: fastlstm's specialised run line
by line, onnxruntime's nodes from its profiler, each grouped by kind of work
(convolutions, pools, recurrent layers, products, the rest).

Used by ``benchmarks/graph_breakdown.py`` and by the stream-capacity
breakdown (``fastlstm.bench_streams``).  Timing a line adds a clock read
after it (about 0.1 us), so the totals run a little above a plain run's.
"""
import collections
import json
import os
import tempfile
import time

import numpy as np

#: kind of work of a callee of the specialised run (by the name ``callee``
#: gives) and of an onnxruntime node (by its op type)
_KINDS = (("conv", ("conv_", "Conv", "STFTConv", "TapsConv", "Winograd")),
          ("pool", ("_bind_pool", "MaxPool", "AveragePool", "GlobalAveragePool")),
          ("recurrent", ("Layer.direct", "RecurrentRunner", "LSTM", "GRU", "RNN")),
          ("product", ("dense", "MatMul", "Gemm", "FusedMatMul")))


def kind(name):
    """'conv', 'pool', 'recurrent', 'product' or 'other' for a callee or op type."""
    for k, keys in _KINDS:
        if any(key in name for key in keys):
            return k
    return "other"


def callee(names, code):
    """What a line of a specialised run calls: '  [Conv stft/Conv]' for a runner
    bound to a node, the function's name else ('' when nothing is called)."""
    rhs = code.split("=", 1)[-1].strip()
    name = rhs.split("(", 1)[0]
    obj = names.get(name) if "(" in rhs and name.isidentifier() else None
    if obj is None:
        return ""
    node = getattr(getattr(obj, "__self__", None), "node", None)
    if node is not None:
        return f"  [{node.op_type} {node.name.split('__Inline_0__')[-1]}]"
    qual = getattr(obj, "__qualname__", None) or getattr(getattr(obj, "py_func", None),
                                                          "__qualname__", "")
    if not qual:
        qual = type(obj).__name__
    return f"  [{qual}]"


def line_times(session, feed, outputs=(), repeats=10, clock=time.perf_counter):
    """[(seconds per run, line + callee)] of the specialised run that
    ``session.run(outputs or None, feed)`` takes, every line of its generated
    source timed by ``clock``; empty when that run is not specialised (or
    fastlstm's internals changed: this reads them)."""
    try:
        sp = session._plan._specialiser
        outputs = tuple(outputs) or tuple(o.name for o in session.get_outputs())
        for _ in range(3):          # the first runs record and build
            session.run(list(outputs), feed)
        fn = sp.lookup(sp.key(feed, outputs, frozenset(), False))
        src = fn.source.splitlines()
        out, labels = [src[0], "    _T = _pc()"], []
        for line in src[1:]:
            code = line.strip()
            out.append(line)
            if code.startswith(("if ", "else", "elif ", "for ", "while ", "return", "try",
                                "except")) or code.endswith(":"):
                continue
            labels.append(code + callee(fn.__globals__, code))
            indent = line[:len(line) - len(code)]
            out.append(f"{indent}_t = _pc(); _acc[{len(labels) - 1}] += _t - _T; _T = _t")
        acc = np.zeros(len(labels))
        ns = dict(fn.__globals__, _acc=acc, _pc=clock)
        exec("\n".join(out) + "\n", ns)
        run = ns[fn.__name__]
        run(feed, None)
        acc[:] = 0
        for _ in range(repeats):
            run(feed, None)
    except Exception:
        return []
    return [(float(acc[k] / repeats), labels[k]) for k in range(len(labels))]


def ort_node_times(model_path, feed, repeats=20, threads=1):
    """[(seconds per run, op type, node name)] of onnxruntime's nodes: the
    median of each node's kernel times in its profiler over ``repeats`` runs
    after three warm-up runs (``If`` nodes left out: their time is their
    branch's nodes, which are listed too)."""
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.enable_profiling = True
    with tempfile.TemporaryDirectory() as d:
        o.profile_file_prefix = os.path.join(d, "ort")
        s = ort.InferenceSession(model_path, o, providers=["CPUExecutionProvider"])
        for _ in range(3 + repeats):
            s.run(None, feed)
        with open(s.end_profiling()) as f:
            events = json.load(f)
    times, op = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][:-len("_kernel_time")]
            times[name].append(e["dur"] * 1e-6)
            op[name] = e.get("args", {}).get("op_name", "")
    return [(float(np.median(t[-repeats:])), op[n], n) for n, t in times.items()
            if op[n] != "If"]


def by_kind(pairs):
    """{kind: seconds} of [(seconds, name)]."""
    out = collections.defaultdict(float)
    for t, name in pairs:
        out[kind(name)] += t
    return dict(out)
