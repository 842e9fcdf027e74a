"""The ``fastlstm`` command line (also ``python -m fastlstm``).

Subcommands
-----------
demo   run the bundled example model, check it against onnxruntime, time both
bench  the benchmark table (and sweep) against onnxruntime
ops    list the ONNX ops fastlstm runs
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

EXAMPLE_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                             "example_lstm.onnx")


def _interleaved_medians(fns, repeats, inner):
    """Median seconds per call of each fn, alternating between them each round."""
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[k].append((time.perf_counter() - t0) / inner)
    return [statistics.median(s) for s in samples]


def cmd_demo(args):
    """Run the example model with fastlstm and onnxruntime: check and time."""
    import fastlstm
    try:
        import onnxruntime as ort
    except ImportError:
        print("the demo compares against onnxruntime: pip install 'fastlstm[bench]'",
              file=sys.stderr)
        return 2
    path = args.model or EXAMPLE_MODEL
    t0 = time.perf_counter()
    sess = fastlstm.InferenceSession(path)
    load_s = time.perf_counter() - t0
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    x_info = inputs[next(iter(inputs))]
    input_size = x_info.shape[-1]
    rows = []
    worst = 0.0
    rng = np.random.default_rng(0)
    for T, B in [(1, 1), (100, 1), (100, 16)]:
        feed = {}
        for name, info in inputs.items():
            shape = [T if d == "seq" else B if d == "batch" else d for d in info.shape]
            feed[name] = rng.standard_normal(shape).astype(np.float32)
        got = sess.run(None, feed)
        exp = ref.run(None, feed)
        err = max(float(np.max(np.abs(g - e))) for g, e in zip(got, exp))
        worst = max(worst, err)
        inner = 200 if T == 1 else 5
        ours, theirs = _interleaved_medians(
            [lambda: sess.run(None, feed), lambda: ref.run(None, feed)],
            repeats=args.repeats, inner=inner)
        rows.append({"T": T, "B": B, "fastlstm_us": ours * 1e6, "onnxruntime_us": theirs * 1e6,
                     "ratio": theirs / ours, "max_abs_err": err})
    ok = worst <= 1e-5
    if args.json:
        print(json.dumps({"model": path, "load_s": load_s, "rows": rows, "ok": ok}, indent=2))
    else:
        print(f"model: {os.path.relpath(path)} (input {input_size}, "
              f"{[o.name for o in sess.get_outputs()]}); loaded in {load_s * 1e3:.0f} ms")
        print(f"threads: {args.threads}; medians of {args.repeats} interleaved rounds")
        print(f"{'T':>5} {'B':>4} {'fastlstm':>12} {'onnxruntime':>12} {'ORT/ours':>9} "
              f"{'max|err|':>9}")
        for r in rows:
            print(f"{r['T']:>5} {r['B']:>4} {r['fastlstm_us']:>10.1f}us "
                  f"{r['onnxruntime_us']:>10.1f}us {r['ratio']:>8.2f}x {r['max_abs_err']:>9.1e}")
        print("outputs match onnxruntime (max abs error <= 1e-5)" if ok else
              "MISMATCH against onnxruntime")
    return 0 if ok else 1


def cmd_bench(args):
    """Time fastlstm against onnxruntime on the benchmark table (and sweep)."""
    from . import bench
    bench.compare(threads=args.threads, sweep=args.sweep, rounds=args.rounds,
                  repeats=args.repeats, json_path=args.json, png_path=args.png, with_torch=not args.no_torch,
                  only=args.cases)
    return 0


def cmd_ops(args):
    """Print the supported ops."""
    import fastlstm
    ops = fastlstm.supported_ops()
    print(json.dumps(ops) if args.json else "\n".join(ops))
    return 0


def build_parser():
    ap = argparse.ArgumentParser(prog="fastlstm", description="Run ONNX recurrent models fast "
                                 "on the CPU.")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the bundled example against onnxruntime")
    d.add_argument("--model", help="an ONNX model with inputs named like the example's")
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--repeats", type=int, default=15)
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("bench", help="time fastlstm against onnxruntime")
    b.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    b.add_argument("--sweep", action="store_true", help="add the B/T/H sweep")
    b.add_argument("--rounds", type=int, default=15, help="samples per process")
    b.add_argument("--repeats", type=int, default=3,
                   help="processes per engine, alternating between engines")
    b.add_argument("--cases", nargs="+", help="only these case names")
    b.add_argument("--json", help="write results as JSON here")
    b.add_argument("--png", help="draw a chart of the ratios here (needs matplotlib)")
    b.add_argument("--no-torch", action="store_true")
    b.set_defaults(fn=cmd_bench)
    o = sub.add_parser("ops", help="list supported ONNX ops")
    o.add_argument("--json", action="store_true")
    o.set_defaults(fn=cmd_ops)
    return ap


def main(argv=None):
    """Entry point of the console script; returns the exit status."""
    from .errors import FastLSTMError
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except FastLSTMError as e:
        print(f"fastlstm: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
