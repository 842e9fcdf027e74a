"""The ``fastlstm`` command line (also ``python -m fastlstm``).

Subcommands
-----------
convert  model.onnx -o model.fastlstm   pack once; verified against onnxruntime
verify   model.onnx|model.fastlstm      random (or given) inputs vs onnxruntime
run      model --input name=file.npy    run and print or save (-o out.npz) outputs
info     model                          inputs, outputs, ops, recurrent layers
demo     the bundled example, checked against onnxruntime and timed
bench    the benchmark table (and sweep) against onnxruntime; --streams: stream capacity
serve    model --port N                 HTTP runs, WebSocket streams, metrics (serve extra)
ops      the ONNX ops fastlstm runs

Exit status: 0 success, 1 failure (verification mismatch, invalid model or
input), 2 bad command line.  ``--json`` prints one JSON document on stdout.
Progress goes to stderr, and only when stderr is a terminal.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

EXAMPLE_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                             "example_lstm.onnx")


#: The benchmark's cases the demo times beside the model (see bench.TABLE).
DEMO_STREAM_CASES = ("stream", "gru-stream")


def _us(microseconds):
    return f"{microseconds:.1f} us" if microseconds < 1000 else f"{microseconds / 1e3:.2f} ms"


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
    if _is_packed_path(path):
        raise SystemExit("fastlstm: error: the demo compares against onnxruntime, which reads "
                         "ONNX models, not .fastlstm files; check a .fastlstm file with "
                         "'fastlstm verify model.fastlstm --reference model.onnx'")
    t0 = time.perf_counter()
    sess = fastlstm.InferenceSession(path)
    load_s = time.perf_counter() - t0
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    x_info = inputs[next(iter(inputs))]
    input_size = x_info.shape[-1]
    from . import bench
    rng = np.random.default_rng(0)
    time_dim, batch_dim = _sequence_dims(sess)
    # Correctness, here: every output against onnxruntime's.
    checks, feeds = [], {}
    for T, B in [(1, 1), (100, 1), (100, 16)]:
        feed = random_inputs(sess, {time_dim: T, batch_dim: B}, seed=int(rng.integers(1 << 30)))
        got = sess.run(None, feed)
        exp = ref.run(None, feed)
        err = max(float(np.max(np.abs(g - e))) for g, e in zip(got, exp))
        checks.append({"T": T, "B": B, "max_abs_err": err})
        feeds[T, B] = feed
    # Speed, measured as `fastlstm bench` measures (bench.measure): each engine
    # in a process of its own, samples in lock step, medians.  The model at batch 1, one
    # step and 100 steps, and the bench's streaming cases, where fastlstm is
    # meant to win most (one step carrying state: fastlstm's stream() against
    # initial_h/c in and Y_h/Y_c out).
    import tempfile
    stream_cases = {name: bench.TABLE[name] for name in DEMO_STREAM_CASES}
    with tempfile.TemporaryDirectory() as tmp:
        cases = {}
        for T, B in [(1, 1), (100, 1)]:
            feed_path = os.path.join(tmp, f"feed_T{T}_B{B}.npz")
            np.savez(feed_path, **feeds[T, B])
            cases[f"model T={T} B={B}"] = bench.model_case(path, feed_path)
        cases.update(stream_cases)
        _progress(f"timing {len(cases)} cases: {args.repeats} x {args.rounds} samples per "
                  f"engine")
        medians = bench.measure(cases, args.threads, args.rounds, args.repeats)
    errors = {f"model T={c['T']} B={c['B']}": c["max_abs_err"] for c in checks}
    errors.update({name: bench.check_case(case) for name, case in stream_cases.items()})
    rows = []
    for name, case in cases.items():
        if isinstance(case, dict):
            what = f"{os.path.basename(path)}, {name[6:]}"
        else:
            op, T, B, I, H, direction, carry = case
            what = f"{op} I={I} H={H}, one step carrying state"
        ours, theirs = medians["fastlstm"][name], medians["onnxruntime"][name]
        rows.append({"case": name, "what": what, "fastlstm_us": ours * 1e6,
                     "onnxruntime_us": theirs * 1e6, "ratio": theirs / ours,
                     "max_abs_err": errors[name]})
    ok = all(e <= 1e-5 for e in errors.values())
    if args.json:
        print(json.dumps({"model": path, "load_s": load_s, "threads": args.threads,
                          "repeats": args.repeats, "rounds": args.rounds, "checks": checks,
                          "rows": rows, "ok": ok}, indent=2))
    else:
        print(f"model: {os.path.relpath(path)} (input {input_size}, outputs "
              f"{', '.join(o.name for o in sess.get_outputs())}); loaded in "
              f"{load_s * 1e3:.0f} ms")
        print("max abs difference from onnxruntime: " + ", ".join(
            f"T={c['T']} B={c['B']} {c['max_abs_err']:.1e}" for c in checks))
        print(f"\ntimed as `fastlstm bench` times: each engine in a process of its own, "
              f"their samples in lock step, {args.rounds} per case, {args.repeats} times "
              f"with new processes; medians; {args.threads} thread(s)")
        print(f"{'case':<44} {'fastlstm':>10} {'onnxruntime':>12} {'ratio':>7}")
        for r in rows:
            print(f"{r['what']:<44} {_us(r['fastlstm_us']):>10} {_us(r['onnxruntime_us']):>12} "
                  f"{r['ratio']:>6.2f}x")
        print("ratio = onnxruntime time / fastlstm time (> 1: fastlstm is faster); "
              "the full table: fastlstm bench")
        print("outputs match onnxruntime (max abs error <= 1e-5)" if ok else
              "MISMATCH against onnxruntime")
    return 0 if ok else 1


def cmd_serve(args):
    """Serve a model: ``fastlstm.server`` (HTTP runs, WebSocket streams, metrics)."""
    from .server import cli_main
    return cli_main(args)


def cmd_bench(args):
    """Time fastlstm against onnxruntime on the benchmark table (and sweep) and
    on the whole-graph cases (``fastlstm.bench_graphs``)."""
    from . import bench
    from .bench_graphs import GRAPH_CASES, compare_graphs
    for path in (args.json, args.png):
        if path:
            check_output_path(path)
    if args.weights is not None:    # reduced precision: fastlstm.bench_lowp
        from .bench_lowp import DEFAULT_CASES, MODES, compare_weights
        unknown = [c for c in (args.cases or []) if c not in bench.TABLE]
        if unknown:
            raise SystemExit(f"fastlstm: error: unknown bench case(s) {', '.join(unknown)}; "
                             f"with --weights the cases are {', '.join(bench.TABLE)}")
        compare_weights(args.cases or DEFAULT_CASES, args.weights or MODES, args.threads,
                        args.rounds, json_path=args.json)
        return 0
    if args.streams:        # stream capacity: fastlstm.bench_streams
        from .bench_streams import run_all
        run_all(seconds=args.stream_seconds, silero=args.silero, json_path=args.json,
                verbose=sys.stderr.isatty())
        return 0
    table_only = graph_only = None
    if args.cases:
        known = dict(bench.TABLE)
        if args.sweep:
            known.update(bench.sweep_cases())
        unknown = [c for c in args.cases if c not in known and c not in GRAPH_CASES]
        if unknown:
            raise SystemExit(f"fastlstm: error: unknown bench case(s) {', '.join(unknown)}; "
                             f"the cases are {', '.join(list(known) + list(GRAPH_CASES))}"
                             f"{'' if args.sweep else ' (and the sweep cases with --sweep)'}")
        table_only = [c for c in args.cases if c in known]
        graph_only = [c for c in args.cases if c in GRAPH_CASES]
    others = [e for e in bench.OPTIONAL_ENGINES if e not in (args.without or [])]
    targets = None
    if args.targets:
        try:
            targets = bench.load_targets(args.targets)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"fastlstm: error: cannot read targets from {args.targets!r}: "
                             f"{e}") from None
    if table_only is None or table_only:
        bench.compare(threads=args.threads, sweep=args.sweep, rounds=args.rounds,
                      repeats=args.repeats, json_path=args.json, png_path=args.png,
                      others=others, only=table_only, targets=targets)
    if graph_only is None or graph_only:
        graphs = compare_graphs(graph_only or list(GRAPH_CASES), args.threads, args.rounds,
                                args.repeats, sys.stdout)
        if args.json:
            doc = {}
            if os.path.exists(args.json) and (table_only is None or table_only):
                with open(args.json) as f:
                    doc = json.load(f)
            doc["graphs"] = graphs
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1)
    return 0


def _progress(msg):
    if sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


def _emit(args, doc, text):
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=1, default=float))
    else:
        print(text)


def _positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


#: Largest total size of the random inputs ``verify`` makes (bytes).
MAX_RANDOM_INPUT_BYTES = 1 << 30


def _dim_size(text):
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"fastlstm: error: --dim sizes are integers >= 1, got {text!r}") \
            from None
    if value < 1:
        raise SystemExit(f"fastlstm: error: --dim sizes are integers >= 1, got {value}")
    return value


def check_output_path(path, what="output"):
    """Refuse, before any work, an output path that cannot be written: a folder
    that does not exist, a folder itself, or an existing device, FIFO, socket
    or link (outputs are written only as regular files, replaced atomically)."""
    import stat
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SystemExit(f"fastlstm: error: cannot write {what} {path!r}: folder {folder!r} "
                         f"does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise SystemExit(f"fastlstm: error: cannot write {what} {path!r}: {e.strerror}") \
            from None
    if stat.S_ISDIR(st.st_mode):
        raise SystemExit(f"fastlstm: error: cannot write {what} {path!r}: it is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise SystemExit(f"fastlstm: error: cannot write {what} {path!r}: it exists and is "
                         f"not a regular file (outputs replace only regular files)")


def _sequence_dims(sess):
    """Names of the time and batch dims of a model's first input (symbolic or not)."""
    inputs = sess.get_inputs()
    shape = list(inputs[0].shape or ()) if inputs else []
    layers = sess.recurrent_layers()
    layout = layers[0].layer.spec.layout if layers else 0
    if len(shape) < 2:
        return None, None
    t, b = (shape[0], shape[1]) if layout == 0 else (shape[1], shape[0])
    return (t if isinstance(t, str) else None), (b if isinstance(b, str) else None)


def _parse_pairs(items, what, convert):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"fastlstm: error: {what} must look like name=value, got {item!r}")
        k, v = item.split("=", 1)
        if not k:
            raise SystemExit(f"fastlstm: error: {what} must look like name=value, got {item!r}")
        out[k] = convert(v)
    return out


def _load_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SystemExit(f"fastlstm: error: cannot read {path}: {e}")


def _is_packed_path(path):
    from .fileformat import MAGIC
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def random_inputs(sess, dims=None, seed=0):
    """Random inputs matching a session's inputs.

    Symbolic dims take their value from ``dims`` (name -> int), else 2 for
    batch-like names and 7 for the rest.  An int input that is a recurrent
    node's sequence_lens gets lengths in [1, seq_length]; other ints are 0/1.
    """
    dims = {k: v for k, v in (dims or {}).items() if k is not None}
    rng = np.random.default_rng(seed)
    from .ops.recurrent_ops import SEQUENCE_LENS, X
    seq_inputs = {}
    for n in sess.recurrent_layers():
        if n.input(SEQUENCE_LENS):
            seq_inputs[n.input(SEQUENCE_LENS)] = n
    feed = {}
    total = 0
    from .ir import ELEM_TYPES
    dtypes = {type_str: dtype for dtype, type_str in ELEM_TYPES.values()}
    for vi in sess.get_inputs():
        shape = []
        for d in vi.shape or ():
            if isinstance(d, int):
                shape.append(d)
            else:
                name = d or "?"
                if name not in dims:
                    dims[name] = 2 if "batch" in name.lower() or name in ("B", "N") else 7
                shape.append(dims[name])
        dtype = dtypes.get(vi.type, np.dtype(np.float32))
        total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if total > MAX_RANDOM_INPUT_BYTES:
            from .errors import InvalidInput
            raise InvalidInput(f"random inputs of shape {shape} for '{vi.name}' (dims "
                               f"{dims}) would take more than "
                               f"{MAX_RANDOM_INPUT_BYTES >> 20} MiB; choose smaller --dim sizes")
        if dtype.kind == "f":
            feed[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif vi.name in seq_inputs:
            n = seq_inputs[vi.name]
            x = feed.get(n.input(X))
            T = x.shape[1 if n.layer.spec.layout else 0] if x is not None else 1
            feed[vi.name] = rng.integers(1, T + 1, shape).astype(dtype)
        else:
            feed[vi.name] = rng.integers(0, 2, shape).astype(dtype)
    return feed


def compare_outputs(names, ours, theirs, atol, rtol):
    """Per output: max abs error, max relative error, pass/fail."""
    rows = []
    for n, a, b in zip(names, ours, theirs):
        a64 = np.asarray(a, np.float64)
        b64 = np.asarray(b, np.float64)
        same_shape = a64.shape == b64.shape
        if same_shape and a64.size:
            diff = np.abs(a64 - b64)
            finite = np.isfinite(diff)
            abs_err = float(diff[finite].max()) if finite.any() else 0.0
            rel_err = float((diff / np.maximum(np.abs(b64), 1e-12))[finite].max()) \
                if finite.any() else 0.0
            ok = bool(np.allclose(a64, b64, atol=atol, rtol=rtol, equal_nan=True))
        else:
            abs_err = rel_err = 0.0 if same_shape else float("inf")
            ok = same_shape
        rows.append({"output": n, "shape": list(a64.shape), "max_abs_err": abs_err,
                     "max_rel_err": rel_err, "pass": ok})
    return rows


def verify_model(model_path, reference=None, inputs=None, dims=None, atol=1e-5, rtol=1e-4,
                 seed=0):
    """Run a model with fastlstm and its ONNX form with onnxruntime; compare outputs."""
    import fastlstm
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("fastlstm: error: verify needs onnxruntime (pip install onnxruntime)")
    onnx_path = reference or model_path
    if reference is not None and not os.path.isfile(reference):
        raise SystemExit(f"fastlstm: error: reference model {reference!r} does not exist")
    if _is_packed_path(onnx_path):
        raise SystemExit("fastlstm: error: a .fastlstm file is verified against its ONNX "
                         "model: pass --reference model.onnx")
    sess = fastlstm.InferenceSession(model_path)
    symbols = {d for vi in sess.get_inputs() for d in (vi.shape or ()) if isinstance(d, str)}
    unknown = sorted(set(dims or {}) - symbols)
    if unknown:
        raise SystemExit(f"fastlstm: error: --dim {', '.join(unknown)}: the model has no such "
                         f"dimension; its symbolic dimensions are {sorted(symbols) or 'none'}")
    feed = random_inputs(sess, dims, seed)
    feed.update(inputs or {})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        ref = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    except Exception as e:      # onnxruntime's own exception types
        raise SystemExit(f"fastlstm: error: onnxruntime cannot load the reference "
                         f"{onnx_path!r}: {e}") from None
    names = [o.name for o in sess.get_outputs()]
    ours_in = {i.name: i.type for i in sess.get_inputs()}
    theirs_in = {i.name: i.type for i in ref.get_inputs()}
    theirs_out = [o.name for o in ref.get_outputs()]
    if ours_in != theirs_in or not set(names) <= set(theirs_out):
        raise SystemExit(f"fastlstm: error: the reference {onnx_path!r} is a different model: "
                         f"inputs {theirs_in}, outputs {theirs_out}; {model_path!r} has inputs "
                         f"{ours_in}, outputs {names}")
    _progress(f"running {len(names)} outputs with fastlstm and onnxruntime")
    ours = sess.run(names, feed)
    try:
        theirs = ref.run(names, feed)
    except Exception as e:      # onnxruntime's own exception types
        raise SystemExit(f"fastlstm: error: onnxruntime failed on the reference: {e}") \
            from None
    return compare_outputs(names, ours, theirs, atol, rtol), feed


def _verify_text(rows):
    lines = [f"{'output':<24} {'shape':<20} {'max abs err':>12} {'max rel err':>12}  result"]
    for r in rows:
        lines.append(f"{r['output']:<24} {str(r['shape']):<20} {r['max_abs_err']:>12.3e} "
                     f"{r['max_rel_err']:>12.3e}  {'PASS' if r['pass'] else 'FAIL'}")
    ok = all(r["pass"] for r in rows)
    lines.append("PASS" if ok else "FAIL")
    return "\n".join(lines), ok


def cmd_verify(args):
    """Compare every output with onnxruntime; exit 1 on any mismatch."""
    inputs = _parse_pairs(args.input, "--input", _load_npy)
    dims = _parse_pairs(args.dim, "--dim", _dim_size)
    if getattr(args, "weights", "float32") != "float32":
        # reduced-precision weights: report what they change against float32
        from .lowp_report import lowp_error, report_text
        rows, _ = lowp_error(args.model, args.weights, inputs, dims)
        _emit(args, {"model": args.model, "weights": args.weights, "outputs": rows},
              report_text(rows, args.weights))
        return 0
    rows, _ = verify_model(args.model, args.reference, inputs, dims, args.atol, args.rtol)
    text, ok = _verify_text(rows)
    _emit(args, {"model": args.model, "outputs": rows, "pass": ok}, text)
    return 0 if ok else 1


def cmd_convert(args):
    """ONNX -> .fastlstm, verified against onnxruntime unless --no-verify."""
    import time as _time
    from .errors import InvalidInput
    from . import fileformat
    from .onnx_import import load_graph
    t0 = _time.perf_counter()
    out = args.output or os.path.splitext(args.model)[0] + ".fastlstm"
    check_output_path(out)
    _progress(f"importing {args.model}")
    graph = load_graph(args.model)
    _progress("packing weights")
    weights = getattr(args, "weights", "float32")
    if weights != "float32":
        from .pack import pack_graph
        from .pack_lowp import convert_graph
        from .simplify import simplify
        graph, kept = convert_graph(pack_graph(simplify(graph)), weights)
        for name, why in kept:
            _progress(f"{name}: {why}")
    size = fileformat.save(graph, out)
    doc = {"model": args.model, "output": out, "bytes": size,
           "onnx_bytes": os.path.getsize(args.model),
           "seconds": _time.perf_counter() - t0}
    text = f"wrote {out} ({size} bytes)"
    ok = True
    if not args.no_verify and weights != "float32":
        # reduced precision: report the error against the float32 model
        import fastlstm
        from .lowp_report import compare, report_text
        inputs = _parse_pairs(args.input, "--input", _load_npy)
        dims = _parse_pairs(args.dim, "--dim", _dim_size)
        ref = fastlstm.InferenceSession(args.model)
        low = fastlstm.InferenceSession(out)
        feed = random_inputs(ref, dims)
        feed.update(inputs)
        names = [o.name for o in ref.get_outputs()]
        rows = compare(names, low.run(names, feed), ref.run(names, feed))
        doc["weights"] = weights
        doc["error_vs_float32"] = rows
        text += "\n" + report_text(rows, weights)
    elif not args.no_verify:
        _progress("verifying against onnxruntime")
        inputs = _parse_pairs(args.input, "--input", _load_npy)
        dims = _parse_pairs(args.dim, "--dim", _dim_size)
        try:
            rows, _ = verify_model(out, args.model, inputs, dims, atol=args.atol,
                                   rtol=args.rtol)
        except InvalidInput as e:
            raise InvalidInput(f"{out} was written, but the random inputs it is verified on "
                               f"do not suit this model ({e}); give sizes with --dim NAME=SIZE "
                               f"or inputs with --input NAME=FILE.npy, or --no-verify") from None
        vtext, ok = _verify_text(rows)
        doc["verify"] = rows
        doc["pass"] = ok
        text += "\n" + vtext
    _emit(args, doc, text)
    return 0 if ok else 1


def cmd_run(args):
    """Run a model on inputs from .npy files; save outputs to .npz or summarize them."""
    import fastlstm
    saved = None
    if args.output:
        # numpy adds .npz to a name without it: say (and check) the real name
        saved = args.output if args.output.endswith(".npz") else args.output + ".npz"
        check_output_path(saved)
    sess = fastlstm.InferenceSession(args.model)
    feed = _parse_pairs(args.input, "--input", _load_npy)
    names = args.output_names or [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feed)
    if saved:
        np.savez(saved, **dict(zip(names, outs)))
    doc = {"outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype),
                        "min": float(o.min()) if o.size else None,
                        "max": float(o.max()) if o.size else None}
                       for n, o in zip(names, outs)], "saved_to": saved}
    text = "\n".join(f"{d['name']}: {d['dtype']} {d['shape']} range [{d['min']}, {d['max']}]"
                     for d in doc["outputs"])
    if saved:
        text += f"\nsaved to {saved}"
    _emit(args, doc, text)
    return 0


def model_info(path):
    """A dict describing a model: inputs, outputs, ops, recurrent layers, sizes."""
    import fastlstm
    from collections import Counter
    from .onnx_import.registry import supported_ops
    unsupported = []
    if not _is_packed_path(path):
        from .onnx_import.reader import read_model
        model = read_model(path)
        ops = Counter(n.op_type for n in model.graph.node)
        unsupported = sorted(op for op in ops if op not in supported_ops())
        if unsupported:
            return {"model": path, "ops": dict(ops), "unsupported_ops": unsupported}
    sess = fastlstm.InferenceSession(path)
    g = sess.graph_info()
    layers = []
    packed_bytes = 0
    for n in sess.recurrent_layers():
        spec, packed = n.layer.spec, n.layer.packed
        nbytes = 0 if packed is None else (packed.W.nbytes + packed.bias.nbytes + sum(
            d.R.nbytes + d.rb.nbytes + d.P.nbytes for d in packed.dirs))
        packed_bytes += nbytes
        row = {"node": n.name, "op": spec.op, "direction": spec.direction,
               "hidden_size": n.layer.hidden_size,
               "input_size": packed.input_size if packed else None,
               "layout": spec.layout, "clip": spec.clip,
               "activations": list(spec.activation_names), "packed_bytes": nbytes,
               "weights": getattr(packed, "mode", "float32")}
        if spec.desc.flag_name:
            row[spec.desc.flag_name] = spec.op_flag
        layers.append(row)
    return {"model": path, "format": "fastlstm" if _is_packed_path(path) else "onnx",
            "inputs": [{"name": i.name, "type": i.type, "shape": i.shape}
                       for i in sess.get_inputs()],
            "outputs": [{"name": o.name, "type": o.type, "shape": o.shape}
                        for o in sess.get_outputs()],
            "ops": g["ops"], "recurrent_layers": layers, "packed_bytes": packed_bytes,
            "constant_bytes": g["constant_bytes"], "metadata": g["metadata"],
            "unsupported_ops": unsupported}


def cmd_info(args):
    info = model_info(args.model)
    lines = [f"model: {info['model']}"]
    if info.get("unsupported_ops") and "inputs" not in info:
        lines.append(f"ops: {info['ops']}")
        lines.append(f"NOT SUPPORTED: {', '.join(info['unsupported_ops'])}")
        _emit(args, info, "\n".join(lines))
        return 1
    lines.append(f"format: {info['format']}; producer: "
                 f"{info['metadata'].get('producer_name', '')} "
                 f"{info['metadata'].get('producer_version', '')}; opset "
                 f"{info['metadata'].get('opset', '?')}")
    for label in ("inputs", "outputs"):
        lines.append(f"{label}:")
        for v in info[label]:
            lines.append(f"  {v['name']:<20} {v['type']:<16} {v['shape']}")
    lines.append("ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(info["ops"].items())))
    lines.append("recurrent layers:")
    from .ops.recurrent_ops import RECURRENT_OPS
    for r in info["recurrent_layers"]:
        flag = RECURRENT_OPS[r["op"]].flag_name
        lines.append(f"  {r['node']}: {r['op']} {r['direction']}, input {r['input_size']}, "
                     f"hidden {r['hidden_size']}, layout {r['layout']}, activations "
                     f"{'/'.join(r['activations'])}, clip {r['clip']}"
                     f"{f', {flag} {r[flag]}' if flag else ''}, {r['weights']} weights, "
                     f"packed {r['packed_bytes']} bytes")
    lines.append(f"packed weights: {info['packed_bytes']} bytes; other constants: "
                 f"{info['constant_bytes']} bytes")
    _emit(args, info, "\n".join(lines))
    return 0


def cmd_ops(args):
    """Print the supported ops (by family; --json: a sorted list)."""
    import fastlstm
    from .ops.table import OPS, ops_by_family
    if args.json:
        print(json.dumps(fastlstm.supported_ops()))
        return 0
    for fam, names in ops_by_family().items():
        print(f"{fam}:")
        for name in names:
            d = OPS[name]
            print(f"  {name:<24} from opset {max(d.first_version, 7):<3} {d.doc}")
    print("recurrent:\n  GRU, LSTM, RNN")
    return 0


def build_parser():
    ap = argparse.ArgumentParser(prog="fastlstm", description="Run ONNX recurrent models fast "
                                 "on the CPU.")
    sub = ap.add_subparsers(dest="command", required=True)

    def tolerances(p):
        p.add_argument("--atol", type=float, default=1e-5)
        p.add_argument("--rtol", type=float, default=1e-4)

    c = sub.add_parser("convert", help="pack an ONNX model into a .fastlstm file")
    c.add_argument("model")
    c.add_argument("-o", "--output", help="default: the model's name with .fastlstm")
    c.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    c.add_argument("--json", action="store_true")
    c.add_argument("--weights", choices=["float32", "bf16", "int8"], default="float32",
                   help="store LSTM/RNN weights in bf16 or int8 (opt-in; the error against "
                        "float32 is reported instead of the onnxruntime check)")
    tolerances(c)
    c.set_defaults(fn=cmd_convert)
    for p in (c,):
        p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                       help="verify on this input instead of a random one")
        p.add_argument("--dim", action="append", metavar="NAME=SIZE",
                       help="value of a symbolic dimension for random inputs")
    v = sub.add_parser("verify", help="compare outputs with onnxruntime")
    v.add_argument("model", help="an ONNX model or a .fastlstm file")
    v.add_argument("--reference", help="the ONNX model (needed for a .fastlstm file)")
    v.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    v.add_argument("--dim", action="append", metavar="NAME=SIZE",
                   help="value of a symbolic dimension for random inputs")
    v.add_argument("--json", action="store_true")
    v.add_argument("--weights", choices=["float32", "bf16", "int8"], default="float32",
                   help="report what bf16 or int8 weights change against float32 "
                        "(max abs/rel error, changed argmax) instead of checking "
                        "against onnxruntime")
    tolerances(v)
    v.set_defaults(fn=cmd_verify)
    r = sub.add_parser("run", help="run a model on .npy inputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy", required=True)
    r.add_argument("--output-names", nargs="+")
    r.add_argument("-o", "--output", help="save the outputs to this .npz file")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_run)
    i = sub.add_parser("info", help="describe a model")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_info)
    d = sub.add_parser("demo", help="run the bundled example against onnxruntime")
    d.add_argument("--model", help="an ONNX model with inputs named like the example's")
    d.add_argument("--threads", type=_positive_int, default=1)
    d.add_argument("--repeats", type=_positive_int, default=3,
                   help="times new timing processes are started, one per engine (as bench)")
    d.add_argument("--rounds", type=_positive_int, default=5,
                   help="samples per engine, case and process, taken in lock step with the "
                        "other engine's (as bench)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("bench", help="time fastlstm against onnxruntime")
    b.add_argument("--threads", type=_positive_int, nargs="+", default=[1, 2])
    b.add_argument("--sweep", action="store_true", help="add the B/T/H sweep")
    b.add_argument("--rounds", type=_positive_int, default=15,
                   help="samples per engine, case and process, taken in lock step with the "
                        "other engine's (one engine's sample, then the other's)")
    b.add_argument("--repeats", type=_positive_int, default=3,
                   help="times new timing processes are started, one per engine")
    b.add_argument("--cases", nargs="+", help="only these case names")
    b.add_argument("--json", help="write results as JSON here")
    b.add_argument("--weights", nargs="*", choices=["float32", "bf16", "int8"],
                   help="time float32/bf16/int8 weights against onnxruntime float32 and "
                        "onnxruntime's own quantized model, with each one's max error "
                        "(no modes given: all three)")
    b.add_argument("--png", help="draw a chart of the ratios here (needs matplotlib)")
    b.add_argument("--without", nargs="+", choices=["torch", "openvino"],
                   help="leave out these engines even when installed")
    b.add_argument("--targets", metavar="FILE.json",
                   help="target ratios to show beside the table (the project's: "
                        "benchmarks/targets.json)")
    b.add_argument("--no-torch", dest="without", action="store_const", const=["torch"],
                   help=argparse.SUPPRESS)
    b.add_argument("--streams", action="store_true",
                   help="instead: how many real-time Silero VAD and LSTM tagger streams one "
                        "core sustains (StreamPool vs onnxruntime; fastlstm.bench_streams)")
    b.add_argument("--stream-seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    b.add_argument("--silero", help="silero_vad.onnx for --streams (default: the "
                                    "checkout's tests/models/silero/)")
    b.set_defaults(fn=cmd_bench)
    sv = sub.add_parser("serve", help="serve a model over HTTP and WebSocket (needs the "
                                      "serve extra)")
    from .server import add_arguments as _serve_arguments
    _serve_arguments(sv)
    sv.set_defaults(fn=cmd_serve)
    o = sub.add_parser("ops", help="list supported ONNX ops")
    o.add_argument("--json", action="store_true")
    o.set_defaults(fn=cmd_ops)
    return ap


def main(argv=None):
    """Entry point of the console script; returns the exit status."""
    from .errors import FastLSTMError
    args = build_parser().parse_args(argv)
    try:
        status = args.fn(args)
        sys.stdout.flush()          # (a closed pipe shows up here, not at exit)
        return status
    except BrokenPipeError:
        # the reader went away (``fastlstm ops | head``): stop quietly, as a
        # command killed by SIGPIPE would, and keep Python from complaining
        # again when it flushes stdout at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except FastLSTMError as e:
        print(f"fastlstm: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:            # a file that cannot be read or written
        print(f"fastlstm: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print("fastlstm: error: out of memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastlstm: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:          # our own messages for bad files and arguments
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
