"""Side-by-side timing of fastlstm against onnxruntime (and PyTorch when installed).

Used by ``fastlstm bench`` and ``benchmarks/compare.py``.  Every case builds a
one-layer model; fastlstm's outputs are checked against onnxruntime's; then
each engine is timed in a process of its own, the two processes taking their
samples in lock step (a sample of about 20 ms from one, then one from the
other, ``--rounds`` pairs per case, the order flipping each time), all of it
``--repeats`` times with new processes, and the median of all samples is
reported (``measure``).  Ratio = onnxruntime time / fastlstm time (> 1: we are
faster).

Why lock step: the machine this is developed on is a shared VM whose speed
moves over seconds to minutes (ten ``fastlstm bench`` runs of the graph
cases over six minutes: the CRNN at width 100 took 1.39-1.98 ms for fastlstm and
1.76-2.24 ms for onnxruntime).  Processes that each took all
their samples in turn (as this did before) measured the engines at different
moments; in lock step each pair of samples sees about the same machine.  The
spread that remains is the machine's: run the command more than once.

Why separate processes: with two threads on two cores, an engine whose idle
workers spin (onnxruntime's do by default, for a while after every run, and so
do ours) steals the core the other engine is timed on.  Timing them in one
process measured that interference, not the engines.

Thread counts: fastlstm and onnxruntime get the same ``intra_op_num_threads``
(OPENBLAS_NUM_THREADS and OMP_NUM_THREADS are set to it too, so no library
brings threads of its own).
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from .ir import num_directions

#: name -> (op, T, B, I, H, direction, carry_state)
TABLE = {
    "stream": ("LSTM", 1, 1, 64, 256, "forward", True),
    "seq256": ("LSTM", 100, 1, 256, 256, "forward", False),
    "seq512": ("LSTM", 100, 1, 512, 512, "forward", False),
    "bidir": ("LSTM", 50, 1, 256, 256, "bidirectional", False),
    "batch8": ("LSTM", 100, 8, 256, 256, "forward", False),
    "batch64": ("LSTM", 100, 64, 256, 256, "forward", False),
    "gru-stream": ("GRU", 1, 1, 64, 256, "forward", True),
}

#: Engines timed too when they are installed (not dependencies of fastlstm)
OPTIONAL_ENGINES = ("torch", "openvino")


def sweep_cases():
    """The sweep: B in {1,4,16,64}, T in {1,16,100}, H in {64..1024}, LSTM and GRU."""
    cases = {}
    for op in ("LSTM", "GRU"):
        for H in (64, 128, 256, 512, 1024):
            for B in (1, 4, 16, 64):
                for T in (1, 16, 100):
                    cases[f"{op.lower()}-T{T}-B{B}-H{H}"] = (op, T, B, H, H, "forward", False)
    return cases


def build_model(op, I, H, direction, carry_state, seed=0):
    """Serialized one-node model with weights as initializers; dynamic T and B."""
    from onnx import TensorProto, helper, numpy_helper
    from .ops.recurrent_ops import RECURRENT_OPS
    desc = RECURRENT_OPS[op]
    rng = np.random.default_rng(seed)
    D = num_directions(direction)
    s = 1.0 / np.sqrt(H)
    shapes = desc.weight_shapes(D, H, I)
    inits = [numpy_helper.from_array(rng.uniform(-s, s, shapes[name]).astype(np.float32), name)
             for name in ("W", "R", "B")]
    states = [desc.inputs[i] for i in desc.state_inputs] if carry_state else []
    outs = list(desc.outputs)
    if carry_state:
        outs = outs[1:]
        node_outs = [""] + outs
    else:
        outs = ["Y"]
        node_outs = ["Y"]
    node = helper.make_node(op, ["X", "W", "R", "B", ""] + states, node_outs,
                            hidden_size=H, direction=direction)
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])]
    ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [D, "B", H]) for n in states]
    g = helper.make_graph([node], "bench", ins,
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in outs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m.SerializeToString()


def interleaved_medians(fns, rounds, inner):
    """Median seconds per call of each fn, alternating between them every round."""
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[k].append((time.perf_counter() - t0) / inner)
    return [statistics.median(s) for s in samples]


def _torch_runner(op, T, B, I, H, direction, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[op]
    mod = cls(I, H, bidirectional=direction == "bidirectional").eval()
    x = torch.randn(T, B, I)

    def run():
        with torch.inference_mode():
            mod(x)
    return run


def _openvino_runner(case, feed, threads):
    """OpenVINO on the CPU, float32 (its default on CPUs with bf16 support is
    bfloat16, which would not be the same computation), same thread count."""
    try:
        import openvino as ov
    except ImportError:
        return None
    import tempfile
    op, T, B, I, H, direction, carry = case
    core = ov.Core()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        with open(path, "wb") as f:
            f.write(build_model(op, I, H, direction, carry))
        compiled = core.compile_model(core.read_model(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()

    def run():
        req.infer(feed)
    return run


def l2_stream_seconds(nbytes=1 << 20):
    """Seconds to read ``nbytes`` of float32 that sit in cache (L2 when they fit;
    else L3), again and again: the faster of a vectorized sum and fastlstm's own
    one-row product over weight panels of that size (reading them in
    alternating order, as its steps do), each the best of several timings."""
    from numba import njit
    from . import config
    from .kernels.gemm import panel_gemm

    # A read-rate probe, not a kernel: reassociation lets LLVM vectorize the sum.
    @njit(**config.jit_options(cache=False, fastmath=set(config.NUMBA_FASTMATH) | {"reassoc"}))
    def _sum(a, reps):
        s = np.float32(0)
        for _ in range(reps):
            for i in range(a.size):
                s += a[i]
        return s

    @njit(**config.jit_options(cache=False))
    def _gemv(reps, K, N, x, wp, out):
        for r in range(reps):
            panel_gemm(1, K, N, 0, N, x.ctypes, 0, K, wp.ctypes, 0, out.ctypes, 0, N, r & 1)

    a = np.ones(nbytes // 4, np.float32)
    K = 256
    N = a.size // K // 64 * 64
    x = np.zeros(K, np.float32)
    out = np.zeros(max(N, 1), np.float32)
    # (run, bytes it reads per repetition)
    runs = [(lambda reps: _sum(a, reps), a.size * 4)]
    if N:
        runs.append((lambda reps: _gemv(reps, K, N, x, a, out), K * N * 4))
    best = float("inf")      # seconds per byte
    for run, size in runs:
        run(1)
        for _ in range(7):
            t0 = time.perf_counter()
            run(50)
            best = min(best, (time.perf_counter() - t0) / 50 / size)
    return best * nbytes


def peak_flops():
    """Multiply-add rate (FLOP/s) of one core at its FMA peak: fastlstm's
    widest register tile (``kernels.gemm.TILE_ROWS`` rows: 12 accumulators on
    AVX2, 16 on AVX-512) over a long K whose operands sit in L1 (one row of
    A and one row of weights, read again for every k), so that nothing but
    the FMA units limits it.  (It used a small panel GEMM before, which also
    counted loads and stores of the output and read 60-65 GFLOP/s on the
    AVX2 host where this probe reads more.)"""
    from numba import njit
    from . import config
    from .kernels import gemm

    mr, nv = gemm.TILE_ROWS, gemm.TILE_VECS
    K = 2048

    @njit(**config.jit_options(cache=False))
    def _loop(reps, a, w, out):
        for _ in range(reps):
            # lda = ldw = 0: every row reads the same K floats of ``a``, every
            # k the same weight vectors
            gemm._tile(mr, nv, K, a.ctypes, 0, 0, w.ctypes, 0, 0, out.ctypes, 0, 16 * nv, 0)

    a = np.full(K, 1e-6, np.float32)
    w = np.full(16 * nv, 1e-6, np.float32)
    out = np.zeros((mr, 16 * nv), np.float32)
    _loop(1, a, w, out)
    best = []
    for _ in range(7):
        t0 = time.perf_counter()
        _loop(100, a, w, out)
        best.append((time.perf_counter() - t0) / 100)
    return 2.0 * mr * 16 * nv * K / min(best)


def floor_seconds(case, threads, peak, read_seconds):
    """An estimate of the least time a float32 engine can take for ``case``.

    Every step must read all of R (each thread its share, from its own cache)
    and do its multiply-adds; the input projection must read W and do its
    multiply-adds.  Each part takes the larger of its bytes at the best read
    rate measured for that size (``read_seconds``) and its FLOPs at the measured
    FMA peak, with the threads sharing perfectly.  Python, activations and the
    gate math are free here.  It is an estimate, not a proof: a faster way to
    read than the ones measured would lower it.  onnxruntime time / floor
    estimates the highest ratio a float32 implementation could show here.
    """
    from .ops.recurrent_ops import RECURRENT_OPS
    op, T, B, I, H, direction, carry = case
    D = num_directions(direction)
    G = RECURRENT_OPS[op].gates
    n = threads
    t_in = max(2.0 * T * B * D * G * H * I / (n * peak), read_seconds(4 * D * G * H * I // n))
    t_step = max(2.0 * B * D * G * H * H / (n * peak), read_seconds(4 * D * G * H * H // n))
    return t_in + T * t_step


def _feed(case):
    op, T, B, I, H, direction, carry = case
    from .ops.recurrent_ops import RECURRENT_OPS
    desc = RECURRENT_OPS[op]
    rng = np.random.default_rng(1)
    D = num_directions(direction)
    feed = {"X": rng.standard_normal((T, B, I)).astype(np.float32)}
    if carry:
        for i in desc.state_inputs:
            feed[desc.inputs[i]] = rng.standard_normal((D, B, H)).astype(np.float32) * 0.1
    return feed


def _fastlstm_session(model, threads):
    import fastlstm
    so = fastlstm.SessionOptions()
    so.intra_op_num_threads = threads
    return fastlstm.InferenceSession(model, so)


def _session(engine, model, threads):
    if engine == "fastlstm":
        s = _fastlstm_session(model, threads)
        return lambda feed: s.run(None, feed)
    if engine == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        return lambda feed: s.run(None, feed)
    raise ValueError(engine)


def check_case(case):
    """Max abs difference between fastlstm and onnxruntime on a case's input."""
    op, T, B, I, H, direction, carry = case
    model = build_model(op, I, H, direction, carry)
    feed = _feed(case)
    a = _session("fastlstm", model, 1)(feed)
    b = _session("onnxruntime", model, 1)(feed)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def model_case(path, feed_path):
    """A case that times the ONNX model at ``path`` on the inputs saved (``np.savez``)
    at ``feed_path``; every engine's process reads the same inputs."""
    return {"model": os.path.abspath(path), "feed": os.path.abspath(feed_path)}


def prepare_run(engine, case, threads):
    """A function that runs ``case`` once on ``engine`` (in this process), or
    None when the engine does not run such cases.

    ``case`` is a table tuple (see ``TABLE``) or a ``model_case``.  Cases that
    carry state between calls use each engine's best way to stream:
    fastlstm's ``stream()``, which keeps the state, and onnxruntime's only way,
    initial_h/initial_c in and Y_h/Y_c out.
    """
    if isinstance(case, dict):
        if engine not in ("fastlstm", "onnxruntime"):
            return None
        with np.load(case["feed"], allow_pickle=False) as z:
            feed = {k: z[k] for k in z.files}
        call = _session(engine, case["model"], threads)
        return lambda: call(feed)
    op, T, B, I, H, direction, carry = case
    feed = _feed(case)
    if engine in OPTIONAL_ENGINES:
        return _torch_runner(op, T, B, I, H, direction, threads) if engine == "torch" \
            else _openvino_runner(case, feed, threads)
    if engine == "fastlstm" and carry:
        st = _fastlstm_session(build_model(op, I, H, direction, carry), threads).stream(B)
        x = {"X": feed["X"]}

        def run():
            st.run(None, x)
        return run
    call = _session(engine, build_model(op, I, H, direction, carry), threads)

    def run():
        call(feed)
    return run


def time_case(engine, case, threads, rounds):
    """Median seconds per run of one engine on one case (in this process);
    None when the engine does not run it (see ``prepare_run``)."""
    run = prepare_run(engine, case, threads)
    return None if run is None else _time_calls(run, rounds)


def _calibrate(run):
    """Calls of ``run`` per sample of about 20 ms, after a few warm-up calls."""
    for _ in range(3):
        run()
    t0 = time.perf_counter()
    run()
    return max(1, int(0.02 / max(time.perf_counter() - t0, 1e-6)))


def _time_calls(run, rounds):
    """Median seconds per call of ``run``: a few warm-up calls, then ``rounds``
    samples of about 20 ms each."""
    return interleaved_medians([run], rounds, _calibrate(run))[0]


def machine():
    """A short description of this machine for the report."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import onnxruntime
    import fastlstm
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "fastlstm": fastlstm.__version__}
    for e in OPTIONAL_ENGINES:
        try:
            info[e] = __import__(e).__version__
        except ImportError:
            pass
    return info


def load_targets(path):
    """Target ratios from a JSON file: {"targets": {case: [1 thread, 2 threads]}}
    (the project's are in benchmarks/targets.json, beside the benchmarks)."""
    with open(path) as f:
        doc = json.load(f)
    return {name: tuple(v) for name, v in doc["targets"].items()}


def target(targets, name, threads):
    """The target ratio of a case at a thread count, or None."""
    t = (targets or {}).get(name)
    return None if t is None else t[0 if threads == 1 else 1]


def format_row(r, targets=None):
    target_col = ""
    t = target(targets, r["case"], r["threads"])
    if t is not None:
        target_col = f"{t:>5.2f}x {'ok' if r['ratio'] >= t else 'below'}"
    extra = "".join(f" {r[e + '_s'] * 1e6:>10.1f}" for e in OPTIONAL_ENGINES if e + "_s" in r)
    return (f"{r['case']:<22} {r['threads']:>3} {r['fastlstm_s'] * 1e6:>11.1f} "
            f"{r['onnxruntime_s'] * 1e6:>11.1f} {r['ratio']:>6.2f}x {target_col:<11}"
            f"{r['max_abs_err']:>9.1e}{extra}")


HEADER = (f"{'case':<22} {'thr':>3} {'fastlstm us':>11} {'ORT us':>11} {'ratio':>7} "
          f"{'target':<11}{'max|err|':>9}")


def plot(results, path):
    """A bar chart of ratios per case and thread count (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(dict.fromkeys(r["case"] for r in results))
    threads = sorted({r["threads"] for r in results})
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.9), 4))
    width = 0.8 / len(threads)
    for k, t in enumerate(threads):
        vals = [next((r["ratio"] for r in results if r["case"] == n and r["threads"] == t), 0)
                for n in names]
        ax.bar([i + k * width for i in range(len(names))], vals, width, label=f"{t} thread(s)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + width * (len(threads) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylabel("onnxruntime time / fastlstm time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def child_main(argv):
    """A timing process of ``measure``: one engine, one thread count, every
    case loaded and warmed up; then it answers each line on stdin, a case
    name, with one sample: a warm-up call, then calls for about 20 ms, timed
    (a JSON line {"seconds": per call}).  An empty line ends it."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--cases", required=True)
    a = ap.parse_args(argv)
    runs, inner = {}, {}
    for name, case in json.loads(a.cases).items():
        run = prepare_run(a.engine, case if isinstance(case, dict) else tuple(case), a.threads)
        if run is None:
            continue
        inner[name] = _calibrate(run)
        runs[name] = run
    print(json.dumps({"cases": list(runs)}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        run, n = runs[name], inner[name]
        run()
        t0 = time.perf_counter()
        for _ in range(n):
            run()
        print(json.dumps({"seconds": (time.perf_counter() - t0) / n}), flush=True)


class _Child:
    """A ``child_main`` process: ``sample(name)`` asks it for one sample."""

    def __init__(self, engine, threads, cases):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-c", "import sys; from fastlstm.bench import child_main; "
               "child_main(sys.argv[1:])", "--engine", engine, "--threads", str(threads),
               "--cases", json.dumps(cases)]
        self.engine = engine
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.cases = None

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the {self.engine} timing process exited ({code}) without "
                               f"an answer; its error output is above")
        return json.loads(line)

    def ready(self):
        self.cases = set(self._reply()["cases"])

    def sample(self, name):
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return self._reply()["seconds"]

    def close(self):
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


#: Seconds between samples with more than one thread.  onnxruntime's idle
#: workers spin for about 50 ms after a run (its process used 48 ms of CPU
#: in a 50 ms sleep after running the CRNN at 2 threads, and as much in a 100
#: ms one); with 20 ms they still took a core from the next sample of
#: fastlstm's team.  fastlstm's workers spin for about 0.5 ms.
SPIN_PAUSE = 0.075


def measure(cases, threads, rounds, repeats, engines=("fastlstm", "onnxruntime")):
    """Median seconds per run of every case for every engine, measured the
    benchmark's way: each engine in a process of its own, the engines' samples
    taken in lock step (case by case: fastlstm's sample, then onnxruntime's,
    then the other way round, ``rounds`` times; one process waits while the
    other runs), so that both see the machine as it is at that moment; all
    of that ``repeats`` times with new processes; the median of all samples.
    With more than one thread a pause of ``SPIN_PAUSE`` seconds comes before
    each sample, for the other engine's idle workers to stop spinning.
    Returns {engine: {case name: seconds}}; a case an engine did not run is
    left out."""
    samples = {e: {name: [] for name in cases} for e in engines}
    k = 0
    for _ in range(repeats):
        children = [_Child(e, threads, cases) for e in engines]
        try:
            for c in children:
                c.ready()
            for name in cases:
                for _ in range(rounds):
                    for c in (children if k % 2 == 0 else children[::-1]):
                        if name in c.cases:
                            if threads > 1:
                                time.sleep(SPIN_PAUSE)
                            samples[c.engine][name].append(c.sample(name))
                    k += 1
        finally:
            for c in children:
                c.close()
    return {e: {name: statistics.median(s) for name, s in per.items() if s}
            for e, per in samples.items()}


def compare(threads=(1, 2), sweep=False, rounds=15, repeats=3, json_path=None,
            png_path=None, others=OPTIONAL_ENGINES, only=None, out=sys.stdout, targets=None):
    """Run the table (and optionally the sweep) at each thread count; print a table.

    ``targets`` ({case: (1 thread, 2 threads)}, see ``load_targets``) adds a
    target column to the table and the floor table."""
    cases = dict(TABLE)
    if sweep:
        cases.update(sweep_cases())
    if only:
        cases = {k: v for k, v in cases.items() if k in only}
    engines = ["fastlstm", "onnxruntime"]
    for e in others:
        try:
            __import__(e)
            engines.append(e)
        except ImportError:
            pass
    extra = engines[2:]
    errors = {name: check_case(case) for name, case in cases.items()}
    results = []
    print(HEADER + "".join(f" {e + ' us':>10}" for e in extra), file=out)
    for t in threads:
        medians = measure(cases, t, rounds, repeats, engines)
        for name, case in cases.items():
            op, T, B, I, H, direction, carry = case
            ours = medians["fastlstm"][name]
            theirs = medians["onnxruntime"][name]
            from .ops.recurrent_ops import RECURRENT_OPS
            flops = 2.0 * T * B * num_directions(direction) * RECURRENT_OPS[op].gates * H * \
                (I + H)
            r = {"case": name, "op": op, "T": T, "B": B, "I": I, "H": H,
                 "direction": direction, "threads": t, "fastlstm_s": ours,
                 "onnxruntime_s": theirs, "ratio": theirs / ours,
                 "max_abs_err": errors[name], "fastlstm_gflops": flops / ours / 1e9}
            for e in extra:
                if name in medians[e]:
                    r[e + "_s"] = medians[e][name]
            results.append(r)
            print(format_row(r, targets), file=out, flush=True)
    peak = peak_flops()
    reads = {}

    def read_seconds(nbytes):
        nbytes = max(4096, nbytes // 4096 * 4096)
        if nbytes not in reads:
            reads[nbytes] = l2_stream_seconds(nbytes)
        return reads[nbytes]

    l2 = read_seconds(1 << 20)

    print("\nfloor: estimated least time of a float32 engine (see "
          "fastlstm.bench.floor_seconds); best = onnxruntime time / floor", file=out)
    print(f"{'case':<22} {'thr':>3} {'floor us':>11} {'best':>7} {'target':>7}", file=out)
    for r in results:
        case = cases[r["case"]]
        fl = floor_seconds(case, r["threads"], peak, read_seconds)
        r["floor_s"] = fl
        r["best_ratio"] = r["onnxruntime_s"] / fl
        tgt = target(targets, r["case"], r["threads"])
        note = "  target above the floor estimate" \
            if tgt is not None and tgt > r["best_ratio"] else ""
        print(f"{r['case']:<22} {r['threads']:>3} {fl * 1e6:>11.1f} {r['best_ratio']:>6.2f}x "
              f"{'' if tgt is None else f'{tgt:.2f}x':>7}{note}", file=out)
    info = machine()
    info["peak_gflops_1core"] = peak / 1e9
    info["l2_stream_1MiB_us"] = l2 * 1e6
    info["command"] = " ".join(sys.argv)
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores; onnxruntime "
          f"{info['onnxruntime']}; reading 1 MiB from L2: {l2 * 1e6:.1f} us; one core's "
          f"FMA peak: {peak / 1e9:.0f} GFLOP/s", file=out)
    for r in results:
        if r["case"] == "seq256" and r["threads"] == 1:
            step = r["fastlstm_s"] / r["T"]
            print(f"seq256 per step at 1 thread: {step * 1e6:.1f} us = "
                  f"{step / l2:.2f}x the L2 stream time of R (1 MiB)", file=out)
    rec = time_case("fastlstm", ("LSTM", 100, 1, 1, 256, "forward", False), 1, rounds) / 100
    info["recurrent_step_us"] = rec * 1e6
    print(f"recurrent step alone (LSTM T=100 B=1 I=1 H=256, 1 thread): {rec * 1e6:.1f} us = "
          f"{rec / l2:.2f}x the L2 stream time of R", file=out)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": info, "results": results}, f, indent=1)
    if png_path and not plot(results, png_path):
        print("(matplotlib not installed: no chart)", file=out)
    return results
