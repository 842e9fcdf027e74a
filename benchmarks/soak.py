"""Soak test: many calls through every serving path, memory and handles watched.

    python benchmarks/soak.py                    # 1,000,000 calls, 300 session cycles
    python benchmarks/soak.py --calls 100000 --json soak.json

Phase 1 makes ``--calls`` calls, each on a path drawn at random (a stream
chunk, ``run``, ``run_sequences``, a micro-batcher request from one of four
client threads) with random sequence lengths and batch sizes, on a forward
LSTM (the bundled ``example_model("lstm_forward")``), ``--threads`` per
session (default 1: on a busy 2-core machine a 2-thread team's spin barrier
makes small batches several times slower, and this counts calls).  The
process's resident memory (RSS) is sampled throughout; after the first 10% of
the calls (warm-up: caches, specialisations, allocator pools) its least-squares
slope is reported in bytes per 100,000 calls, with the growth from the end of
the warm-up to the end and over the second half alone.

Phase 2 counts open file descriptors and native threads, then creates and
drops ``--cycles`` sessions (each runs, streams and serves a micro-batch, with
2 threads, so each owns a thread team), and counts again: a session releases
its team and everything else when it is collected.

Not part of the unit suite (it takes minutes); exit status 1 when memory grew
by more than ``--max-growth-mb`` after warm-up or a handle leaked.
"""
import argparse
import gc
import json
import os
import sys
import threading
import time

import numpy as np

import fastlstm


def rss_bytes():
    """Resident anonymous memory (RssAnon: the heap, where a leak shows), not RSS:
    on a shared machine the kernel evicts file-backed pages (libraries) and RSS
    drops by tens of MiB at random moments."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def native_threads():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return threading.active_count()


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def slope_per(xs, ys, per):
    """Least-squares slope of ys over xs, per ``per`` units of x."""
    x = np.asarray(xs, np.float64)
    y = np.asarray(ys, np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0] * per)


def _session(threads=2):
    so = fastlstm.SessionOptions()
    so.intra_op_num_threads = threads
    return fastlstm.InferenceSession(fastlstm.example_model("lstm_forward"), so)


def soak_calls(calls, seed=0, samples=400, progress=False, threads=1):
    """Phase 1: returns a dict of counts, RSS samples and the slope."""
    rng = np.random.default_rng(seed)
    sess = _session(threads)
    I = 64
    stream = sess.stream(batch_size=1)
    stream_b = sess.stream(batch_size=3)
    state_shape = (1, 1, 128)
    counts = {"stream": 0, "run": 0, "run_sequences": 0, "micro_batcher": 0}
    xs, ys = [], []
    every = max(1, calls // samples)
    mb = fastlstm.MicroBatcher(sess, max_batch=8, max_wait_us=200, workers=1)
    pending = []
    lock = threading.Lock()

    def client(n, cseed):
        r = np.random.default_rng(cseed)
        for _ in range(n):
            x = r.standard_normal((int(r.integers(1, 9)), I)).astype(np.float32)
            out = mb.run(x)
            assert out["Y"].shape[0] == x.shape[0]
            with lock:
                counts["micro_batcher"] += 1

    t0 = time.perf_counter()
    done = 0
    while done < calls:
        path = rng.random()
        if path < 0.4:
            if rng.random() < 0.5:
                stream.run(["Y"], {"X": rng.standard_normal(
                    (int(rng.integers(0, 5)), 1, I)).astype(np.float32)})
            else:
                stream_b.run(None, {"X": rng.standard_normal(
                    (int(rng.integers(1, 5)), 3, I)).astype(np.float32)})
            if rng.random() < 0.01:
                stream.reset()
            counts["stream"] += 1
            done += 1
        elif path < 0.75:
            T, B = int(rng.integers(1, 9)), int(rng.integers(1, 5))
            sess.run(None, {"X": rng.standard_normal((T, B, I)).astype(np.float32),
                            "initial_h": np.zeros((1, B, 128), np.float32),
                            "initial_c": np.zeros((1, B, 128), np.float32)})
            counts["run"] += 1
            done += 1
        elif path < 0.97:
            seqs = [rng.standard_normal((int(rng.integers(1, 9)), I)).astype(np.float32)
                    for _ in range(int(rng.integers(1, 6)))]
            sess.run_sequences(seqs)
            counts["run_sequences"] += 1
            done += 1
        else:           # a burst of concurrent micro-batcher clients
            n = 5
            threads = [threading.Thread(target=client, args=(n, int(rng.integers(1 << 30))))
                       for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done += 4 * n
        if done // every > len(xs):
            xs.append(done)
            ys.append(rss_bytes())
            if progress and len(xs) % 20 == 0:
                print(f"  {done:>9} calls  rss {ys[-1] / 2**20:8.1f} MiB  "
                      f"{time.perf_counter() - t0:6.0f} s", file=sys.stderr, flush=True)
    mb.close()
    del pending, state_shape
    warm = max(1, len(xs) // 10)
    return {"calls": done, "counts": counts, "seconds": time.perf_counter() - t0,
            "rss_start_mb": ys[0] / 2**20, "rss_after_warmup_mb": ys[warm] / 2**20,
            "rss_end_mb": ys[-1] / 2**20,
            "growth_after_warmup_mb": (ys[-1] - ys[warm]) / 2**20,
            "growth_second_half_mb": (ys[-1] - ys[len(ys) // 2]) / 2**20,
            "slope_bytes_per_100k_calls": slope_per(xs[warm:], ys[warm:], 100_000),
            "samples": list(zip(xs, ys))}


def session_cycles(cycles, seed=1):
    """Phase 2: handles before and after creating and dropping sessions."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 1, 64)).astype(np.float32)
    z = np.zeros((1, 1, 128), np.float32)
    # one cycle first, so that lazily created process-wide things are not counted
    for _ in range(2):
        s = _session()
        s.run(None, {"X": x, "initial_h": z, "initial_c": z})
        del s
    gc.collect()
    before = {"fds": open_fds(), "native_threads": native_threads(),
              "python_threads": threading.active_count(), "rss_mb": rss_bytes() / 2**20}
    for k in range(cycles):
        s = _session()
        s.run(None, {"X": x, "initial_h": z, "initial_c": z})
        st = s.stream()
        st.run(["Y"], {"X": x})
        if k % 10 == 0:
            with fastlstm.MicroBatcher(s, max_batch=4, max_wait_us=100) as mb:
                mb.run(x[:, 0])
            del mb
        del s, st
        if k % 25 == 0:
            gc.collect()
    gc.collect()
    after = {"fds": open_fds(), "native_threads": native_threads(),
             "python_threads": threading.active_count(), "rss_mb": rss_bytes() / 2**20}
    return {"cycles": cycles, "before": before, "after": after}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="threads per session in phase 1")
    ap.add_argument("--max-growth-mb", type=float, default=16.0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    print(f"phase 1: {args.calls} calls", file=sys.stderr)
    calls = soak_calls(args.calls, progress=sys.stderr.isatty(), threads=args.threads)
    print(f"calls {calls['calls']} in {calls['seconds']:.0f} s {calls['counts']}")
    print(f"RssAnon {calls['rss_start_mb']:.1f} MiB at start, {calls['rss_after_warmup_mb']:.1f} "
          f"after warm-up, {calls['rss_end_mb']:.1f} at the end: "
          f"{calls['growth_after_warmup_mb']:+.2f} MiB after warm-up, "
          f"{calls['growth_second_half_mb']:+.2f} MiB over the second half, slope "
          f"{calls['slope_bytes_per_100k_calls'] / 1024:+.1f} KiB per 100k calls")
    print(f"phase 2: {args.cycles} session create/drop cycles", file=sys.stderr)
    cyc = session_cycles(args.cycles)
    print(f"sessions: {cyc['cycles']} cycles; fds {cyc['before']['fds']} -> "
          f"{cyc['after']['fds']}, native threads {cyc['before']['native_threads']} -> "
          f"{cyc['after']['native_threads']}, Python threads "
          f"{cyc['before']['python_threads']} -> {cyc['after']['python_threads']}, RSS "
          f"{cyc['before']['rss_mb']:.1f} -> {cyc['after']['rss_mb']:.1f} MiB")
    ok = (calls["growth_after_warmup_mb"] <= args.max_growth_mb
          and cyc["after"]["fds"] <= cyc["before"]["fds"]
          and cyc["after"]["native_threads"] <= cyc["before"]["native_threads"])
    print("PASS" if ok else "FAIL")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"calls": {k: v for k, v in calls.items() if k != "samples"},
                       "rss_samples": calls["samples"], "sessions": cyc, "pass": ok}, f,
                      indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
