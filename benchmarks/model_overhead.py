"""Per-call overhead of a whole model beyond its recurrent kernels, at T=1, B=1.

Times ``session.run`` on the model, then the model's recurrent nodes alone
(their runners called directly on the same inputs, which is the kernels plus
the front end), and reports the difference: the cost of input checks, glue ops
and the executor.  Medians of repeated rounds.

    python benchmarks/model_overhead.py [model.onnx ...]
"""
import glob
import os
import statistics
import sys
import time

import numpy as np

import fastlstm

HERE = os.path.dirname(os.path.abspath(__file__))


def median_time(fn, inner=500, rounds=9):
    fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def measure(path):
    from fastlstm.cli import random_inputs
    sess = fastlstm.InferenceSession(path)
    dims = {}
    for vi in sess.get_inputs():
        for d in vi.shape or ():
            if isinstance(d, str):
                dims[d] = 1
    feed = random_inputs(sess, dims)
    for vi in sess.get_inputs():
        if vi.type == "tensor(int64)" and vi.name != "lengths":
            feed[vi.name] = np.zeros_like(feed[vi.name])
    whole = median_time(lambda: sess.run(None, feed))
    # every value of one real run: each recurrent node's inputs are among them
    values = sess.trace(feed)
    steps = sess.plan_runners()
    captured = [r for node, r in steps if node.layer is not None]
    bare = sum(median_time(lambda r=r: r(values)) for r in captured)
    n_glue = len(steps) - len(captured)
    return whole, bare, n_glue, len(captured)


def main(paths):
    paths = paths or sorted(glob.glob(os.path.join(HERE, "..", "tests", "models", "*.onnx")))
    print(f"{'model':<48} {'run us':>8} {'recurrent us':>13} {'overhead us':>12} "
          f"{'glue ops':>8}")
    for p in paths:
        whole, bare, n_glue, n_rec = measure(p)
        print(f"{os.path.basename(p)[:-5]:<48} {whole * 1e6:>8.1f} {bare * 1e6:>13.1f} "
              f"{(whole - bare) * 1e6:>12.1f} {n_glue:>8}")


if __name__ == "__main__":
    main(sys.argv[1:])
