"""``fastlstm bench --weights``: float32, bf16 and int8 weights against onnxruntime,
float32 and quantized, with each one's error, in one run.

Per case of the benchmark table (``fastlstm.bench.TABLE``), all in this
process and timed interleaved (``bench.interleaved_medians``):

ort        onnxruntime, the float32 model
ort-q      onnxruntime, the same model quantized by its own
           ``quantize_dynamic`` (a com.microsoft DynamicQuantizeLSTM)
float32 / bf16 / int8
           fastlstm on the float32 model with those weights
fl-ort-q   fastlstm running onnxruntime's quantized model (its scheme)

Errors are max abs differences from onnxruntime's float32 outputs on the same
inputs (fl-ort-q: from onnxruntime's quantized outputs).  Ratios are
onnxruntime time / fastlstm time: float32, bf16 and int8 against ``ort``,
fl-ort-q against ``ort-q``.  Streaming cases carry state: fastlstm through
``stream()``, onnxruntime by feeding initial_h/initial_c.
"""
import json
import os
import sys
import tempfile

import numpy as np

from . import bench

DEFAULT_CASES = ("seq256", "seq512", "stream")
MODES = ("float32", "bf16", "int8")


def _quantized(model_bytes, folder):
    import logging

    from onnxruntime.quantization import quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)
    f, q = os.path.join(folder, "f.onnx"), os.path.join(folder, "q.onnx")
    with open(f, "wb") as fh:
        fh.write(model_bytes)
    quantize_dynamic(f, q)
    with open(q, "rb") as fh:
        return fh.read()


def _ort(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _fl(model, threads, weights="float32"):
    import fastlstm
    so = fastlstm.SessionOptions()
    so.intra_op_num_threads = threads
    so.weights = weights
    return fastlstm.InferenceSession(model, so)


def _err(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - y))) for x, y in zip(a, b))


def run_case(name, modes=MODES, threads=1, rounds=15):
    """Times (seconds) and errors of every column for one table case."""
    case = bench.TABLE[name]
    op, T, B, I, H, direction, carry = case
    model = bench.build_model(op, I, H, direction, carry)
    with tempfile.TemporaryDirectory() as d:
        qmodel = _quantized(model, d)
    feed = bench._feed(case)
    # accuracy on the case's inputs; a streaming case's one step is checked on
    # 100 steps, where errors can accumulate
    efeed = dict(feed)
    if carry:
        efeed["X"] = np.random.default_rng(2).standard_normal((100, B, I)).astype(np.float32)
    ort_f, ort_q = _ort(model, threads), _ort(qmodel, threads)
    ref, ref_q = ort_f.run(None, efeed), ort_q.run(None, efeed)
    cols = {"ort": {"err": 0.0}, "ort-q": {"err": _err(ref_q, ref)}}
    fns = [lambda: ort_f.run(None, feed), lambda: ort_q.run(None, feed)]
    for label, m, w, against in ([(mode, model, mode, ref) for mode in modes]
                                 + [("fl-ort-q", qmodel, "float32", ref_q)]):
        s = _fl(m, threads, w)
        cols[label] = {"err": _err(s.run(None, efeed), against)}
        if carry:
            st = s.stream(B)
            x = {"X": feed["X"]}
            fns.append(lambda st=st, x=x: st.run(None, x))
        else:
            fns.append(lambda s=s: s.run(None, feed))
    for f in fns:           # warm up; the slowest sets how many calls make a sample
        for _ in range(3):
            f()
    import time
    slow = 0.0
    for f in fns:
        t0 = time.perf_counter()
        f()
        slow = max(slow, time.perf_counter() - t0)
    inner = max(1, int(0.02 / max(slow, 1e-6)))
    times = bench.interleaved_medians(fns, rounds, inner)
    for label, t in zip(cols, times):
        cols[label]["seconds"] = t
    for label in cols:
        if label in MODES:
            cols[label]["ratio"] = cols["ort"]["seconds"] / cols[label]["seconds"]
    cols["fl-ort-q"]["ratio"] = cols["ort-q"]["seconds"] / cols["fl-ort-q"]["seconds"]
    cols["ort-q"]["ratio"] = cols["ort"]["seconds"] / cols["ort-q"]["seconds"]
    return {"case": name, "spec": list(case), "threads": threads, "columns": cols}


def compare_weights(cases=DEFAULT_CASES, modes=MODES, threads=(1,), rounds=15, out=sys.stdout,
                    json_path=None):
    """Print (and optionally save) the accuracy/speed table."""
    rows = []
    labels = ["ort", "ort-q"] + list(modes) + ["fl-ort-q"]
    head = f"{'case':<10} {'thr':>3} " + " ".join(f"{lab:>24}" for lab in labels)
    print("us per call (ratio vs onnxruntime float32; fl-ort-q vs ort-q) [max abs error]",
          file=out)
    print(head, file=out)
    for n in threads:
        for name in cases:
            r = run_case(name, modes, n, rounds)
            rows.append(r)
            cells = []
            for lab in labels:
                c = r["columns"][lab]
                ratio = f" {c['ratio']:.2f}x" if "ratio" in c else ""
                cells.append(f"{c['seconds'] * 1e6:9.1f}{ratio:>7} [{c['err']:.1e}]")
            print(f"{name:<10} {n:>3} " + " ".join(f"{c:>24}" for c in cells), file=out)
            out.flush()
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": bench.machine(), "weights": rows}, f, indent=1)
    return rows
