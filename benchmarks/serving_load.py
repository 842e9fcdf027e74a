"""Load test: many threads sending single sequences of random lengths.

Compares, from the same N caller threads:
- fastlstm through the MicroBatcher (requests coalesced into packed batches),
- fastlstm called directly (one session shared by all threads),
- onnxruntime called directly (one session shared by all threads),
and checks every fastlstm response against the sequential answer.  Also
measures a stream's one-step call against the kernel time of that step.

    python benchmarks/serving_load.py [--threads 8] [--requests 2000] [--hidden 256]
"""
import argparse
import statistics
import sys
import threading
import time

import numpy as np

import fastlstm
from fastlstm.bench import build_model


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def drive(n_threads, reqs, call):
    """Run call(i) for every request from n_threads threads; latencies and wall time."""
    lat = [0.0] * len(reqs)

    def work(t):
        for i in range(t, len(reqs), n_threads):
            t0 = time.perf_counter()
            call(i)
            lat[i] = time.perf_counter() - t0
    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return lat, time.perf_counter() - t0


def report(label, lat, wall, n):
    print(f"{label:<28} {n / wall:>9.0f} req/s   p50 {percentile(lat, 0.5) * 1e3:7.2f} ms   "
          f"p99 {percentile(lat, 0.99) * 1e3:7.2f} ms")


def stream_overhead(I, H, repeats=2000):
    """A stream's one-step call against the kernels alone for that step.

    "Kernels alone" is the front end called directly with the same packed
    layer, input and state (input GEMM, recurrent step, outputs): what remains
    of the stream call is Python (input checks, executor, state bookkeeping).
    """
    model = build_model("LSTM", I, H, "forward", True)
    sess = fastlstm.InferenceSession(model)
    st = sess.stream()
    x1 = np.random.default_rng(0).standard_normal((1, 1, I)).astype(np.float32)
    layer = next(r for node, r in sess.plan_runners() if node.layer is not None) \
        .frontend_layer()
    h = np.zeros((1, 1, H), np.float32)

    def kernels():
        layer.run(x1, layout=0, initial_h=h, initial_c=h, want_y=False)

    def call():
        st.run(None, {"X": x1})

    for name, fn in (("call", call), ("kernels", kernels)):
        for _ in range(200):
            fn()
    samples = {"call": [], "kernels": []}
    for _ in range(9):
        for name, fn in (("call", call), ("kernels", kernels)):
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            samples[name].append((time.perf_counter() - t0) / repeats)
    times = {k: statistics.median(v) for k, v in samples.items()}
    over = times["call"] - times["kernels"]
    print(f"stream one-step call (LSTM I={I} H={H}, B=1): {times['call'] * 1e6:.1f} us; "
          f"kernels + front end alone: {times['kernels'] * 1e6:.1f} us; overhead "
          f"{over * 1e6:.1f} us = {over / times['kernels']:.2f}x the kernel time")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000, help="per thread")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--max-batch", type=int, default=4,
                    help="with closed-loop callers, threads / workers keeps every worker busy")
    ap.add_argument("--max-wait-us", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2, help="micro-batcher worker threads")
    a = ap.parse_args(argv)
    import onnxruntime as ort
    model = build_model("LSTM", a.input, a.hidden, "forward", False)
    sess = fastlstm.InferenceSession(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    n = a.threads * a.requests
    reqs = [rng.standard_normal((int(rng.integers(1, a.max_len + 1)), a.input))
            .astype(np.float32) for _ in range(n)]
    print(f"{a.threads} threads x {a.requests} requests, LSTM I={a.input} H={a.hidden}, "
          f"lengths 1..{a.max_len}; {sess.num_threads} fastlstm thread(s) per run, "
          f"onnxruntime intra_op_num_threads=1")
    expected = [sess.run_sequences([r])[0]["Y"] for r in reqs]
    got = [None] * n
    with fastlstm.MicroBatcher(sess, max_batch=a.max_batch, max_wait_us=a.max_wait_us,
                               workers=a.workers) as mb:
        def via_batcher(i):
            got[i] = mb.run(reqs[i])["Y"]
        lat, wall = drive(a.threads, reqs, via_batcher)
        batches = mb.batches
    bad = sum(not np.array_equal(g, e) for g, e in zip(got, expected))
    report(f"fastlstm micro-batcher ({a.workers}w)", lat, wall, n)
    print(f"  {batches} batches (mean {n / batches:.1f} requests); {bad} responses differ "
          f"from the sequential answer")

    def direct(i):
        got[i] = sess.run(["Y"], {"X": reqs[i][:, None, :]})[0][:, 0]
    lat, wall = drive(a.threads, reqs, direct)
    bad = sum(not np.array_equal(g, e) for g, e in zip(got, expected))
    report("fastlstm direct", lat, wall, n)
    print(f"  {bad} responses differ from the sequential answer")

    ort_out = [None] * n

    def ort_direct(i):
        ort_out[i] = ref.run(["Y"], {"X": reqs[i][:, None, :]})[0][:, 0]
    lat, wall = drive(a.threads, reqs, ort_direct)
    report("onnxruntime direct", lat, wall, n)
    err = max(float(np.max(np.abs(o - e))) for o, e in zip(ort_out, expected))
    print(f"  max |fastlstm - onnxruntime| over all responses: {err:.1e}")
    stream_overhead(a.input, a.hidden)
    return 0


if __name__ == "__main__":
    sys.exit(main())
