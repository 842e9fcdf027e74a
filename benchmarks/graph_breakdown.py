"""Where a graph case's time goes, fastlstm against onnxruntime, by kind of work.

For each case of ``fastlstm bench`` (``fastlstm.bench_graphs``), one thread
(``--threads N`` for N, both engines):
fastlstm's specialised run timed line by line (``fastlstm.bench_lines``) and
onnxruntime's nodes from its profiler, both grouped into convolutions, pools,
recurrent layers, products and the rest, in microseconds per run (medians of
``--rounds`` rounds, the engines alternating), with the ratio onnxruntime /
fastlstm per kind.  ``--lines N`` also lists each engine's N heaviest lines
or nodes.  Both engines' timers add a little per line or node, so the totals
run above a plain run's (``fastlstm bench`` gives those).

    python benchmarks/graph_breakdown.py [--cases crnn-100 crnn-400 silero] [--rounds 5]
        [--threads 1] [--lines N]
"""
import argparse
import collections
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastlstm  # noqa: E402
from fastlstm import bench_lines  # noqa: E402
from fastlstm.bench_graphs import graph_cases  # noqa: E402

KINDS = ("conv", "pool", "recurrent", "product", "other")


def breakdown(case, rounds, repeats, threads=1):
    with np.load(case["feed"], allow_pickle=False) as z:
        feed = {k: z[k] for k in z.files}
    opts = fastlstm.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = fastlstm.InferenceSession(case["model"], opts)
    ours, ort = collections.defaultdict(list), collections.defaultdict(list)
    lines, nodes = collections.defaultdict(list), collections.defaultdict(list)
    for _ in range(rounds):
        got = bench_lines.line_times(sess, feed, repeats=repeats)
        if not got:
            raise SystemExit("fastlstm: error: the case's run is not specialised")
        for k, t in bench_lines.by_kind([(t, label) for t, label in got]).items():
            ours[k].append(t)
        for t, label in got:
            lines[label].append(t)
        got = bench_lines.ort_node_times(case["model"], feed, repeats=repeats, threads=threads)
        for k, t in bench_lines.by_kind([(t, op) for t, op, _ in got]).items():
            ort[k].append(t)
        for t, op, name in got:
            nodes[f"{op} {name}"].append(t)

    def med(d):
        return {k: statistics.median(v + [0.0] * (rounds - len(v))) * 1e6 for k, v in d.items()}
    return med(ours), med(ort), med(lines), med(nodes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["crnn-100", "crnn-400", "silero"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--lines", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    cases, missing = graph_cases(args.cases)
    for name, why in missing.items():
        print(f"{name}: skipped ({why})")
    for name, case in cases.items():
        ours, ort, lines, nodes = breakdown(case, args.rounds, args.repeats, args.threads)
        print(f"\n{name}: us per run, {args.threads} thread{'s' * (args.threads > 1)}, "
              f"medians of {args.rounds} rounds")
        print("| kind | fastlstm | onnxruntime | ratio |\n|---|---:|---:|---:|")
        for k in KINDS + ("total",):
            a = sum(ours.values()) if k == "total" else ours.get(k, 0.0)
            b = sum(ort.values()) if k == "total" else ort.get(k, 0.0)
            ratio = f"{b / a:.2f}x" if a > 0 and b > 0 else "-"
            print(f"| {k} | {a:.1f} | {b:.1f} | {ratio} |")
        if args.lines:
            for title, d in (("fastlstm lines", lines), ("onnxruntime nodes", nodes)):
                print(f"\n{title} (us per run):")
                for label, t in sorted(d.items(), key=lambda kv: -kv[1])[:args.lines]:
                    print(f"  {t:8.1f}  {label[:110]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
