"""What reduced-precision weights change: outputs against the float32 model.

``lowp_error(model, weights="int8")`` runs a model twice -- float32 weights
and ``weights`` -- on the same inputs (given, or random as ``fastlstm
verify`` makes them) and reports per output: max abs error, max relative
error (against max(|float32|, 1e-6)), and for classifier-like outputs (a last
axis of 2 or more) the fraction of positions whose argmax over that axis
changed.  ``fastlstm verify MODEL --weights int8`` prints it.
"""
import numpy as np


def compare(names, ours, ref):
    """Rows of the report for outputs ``ours`` against float32 ``ref``."""
    rows = []
    for n, a, b in zip(names, ours, ref):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        row = {"output": n, "shape": list(a64.shape), "max_abs_err": 0.0, "max_rel_err": 0.0,
               "argmax_changed": None, "max_abs_ref": 0.0}
        if a64.shape != b64.shape:
            row["max_abs_err"] = float("inf")
        elif a64.size:
            d = np.abs(a64 - b64)
            row["max_abs_err"] = float(d.max())
            row["max_rel_err"] = float((d / np.maximum(np.abs(b64), 1e-6)).max())
            row["max_abs_ref"] = float(np.abs(b64).max())
            if a64.ndim >= 1 and a64.shape[-1] >= 2 and np.issubdtype(np.asarray(a).dtype,
                                                                       np.floating):
                changed = np.argmax(a64, -1) != np.argmax(b64, -1)
                row["argmax_changed"] = float(changed.mean())
                row["argmax_changed_count"] = int(changed.sum())
                row["argmax_positions"] = int(changed.size)
        rows.append(row)
    return rows


def lowp_error(model, weights="int8", inputs=None, dims=None, seed=0, threads=1):
    """Run ``model`` (path or bytes) with float32 and with ``weights`` weights on
    the same inputs and compare (see the module docstring).

    Returns ``(rows, feed)``: one dict per output and the inputs used.
    """
    import fastlstm
    from .cli import random_inputs

    def session(mode):
        o = fastlstm.SessionOptions()
        o.weights = mode
        o.intra_op_num_threads = threads
        return fastlstm.InferenceSession(model, o)

    ref_sess, low = session("float32"), session(weights)
    feed = random_inputs(ref_sess, dims, seed)
    feed.update(inputs or {})
    names = [o.name for o in ref_sess.get_outputs()]
    return compare(names, low.run(names, feed), ref_sess.run(names, feed)), feed


def report_text(rows, weights):
    lines = [f"{weights} weights against float32:",
             f"{'output':<24} {'shape':<20} {'max abs err':>12} {'max rel err':>12} "
             f"{'argmax changed':>16}"]
    for r in rows:
        am = "" if r["argmax_changed"] is None else \
            f"{r['argmax_changed_count']}/{r['argmax_positions']}"
        lines.append(f"{r['output']:<24} {str(r['shape']):<20} {r['max_abs_err']:>12.3e} "
                     f"{r['max_rel_err']:>12.3e} {am:>16}")
    return "\n".join(lines)
