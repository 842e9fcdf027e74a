"""Time Silero VAD per chunk, fastlstm against onnxruntime, 1 thread each.

    python examples/vad_bench.py [--engines fastlstm onnxruntime] [--repeats 15]

Each engine runs in its own process.  Streamed (silero_vad.onnx, 16 kHz): the
recording in tests/models/silero (305 chunks of 64 + 512 samples) fed chunk
by chunk, `state` carried, frames cut beforehand so only `run` is timed;
one pass is timed at a time, and the median pass divided by the chunk count
is the time per chunk (wall clock; also the best pass, and the median CPU
time of the process, which a busy machine inflates less).  Sequence
(silero_vad_16k_sequence.onnx): the 305 frames in one call, median call
divided by 305.  A warm-up pass first.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SILERO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models", "silero")


def frames(x, n=512, c=64):
    x = np.concatenate([x, np.zeros((-len(x)) % n, np.float32)]).reshape(-1, n)
    ctx = np.concatenate([np.zeros((1, c), np.float32), x[:-1, -c:]])
    return np.ascontiguousarray(np.concatenate([ctx, x], axis=1))


def session(engine, path):
    if engine == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    import fastlstm
    so = fastlstm.SessionOptions()
    so.intra_op_num_threads = 1
    return fastlstm.InferenceSession(path, so)


def worker(engine, repeats):
    x = np.load(os.path.join(SILERO, "speech_16k.npy")).astype(np.float32) / 32768
    fr = frames(x)
    chunks = [np.ascontiguousarray(f[None]) for f in fr]
    result = {"engine": engine, "chunks": len(chunks)}

    sess = session(engine, os.path.join(SILERO, "silero_vad.onnx"))
    run, names, sr = sess.run, ["output", "stateN"], np.array(16000, np.int64)

    def one_pass():
        state = np.zeros((2, 1, 128), np.float32)
        c0, t0 = time.process_time(), time.perf_counter()
        for c in chunks:
            _, state = run(names, {"input": c, "state": state, "sr": sr})
        return time.perf_counter() - t0, time.process_time() - c0

    one_pass()
    passes = [one_pass() for _ in range(repeats)]
    wall, cpu = sorted(p[0] for p in passes), sorted(p[1] for p in passes)
    result["stream_us_per_chunk"] = 1e6 * wall[len(wall) // 2] / len(chunks)
    result["stream_us_per_chunk_best"] = 1e6 * wall[0] / len(chunks)
    result["stream_cpu_us_per_chunk"] = 1e6 * cpu[len(cpu) // 2] / len(chunks)

    seq = session(engine, os.path.join(SILERO, "silero_vad_16k_sequence.onnx"))
    zeros = np.zeros((1, 1, 128), np.float32)
    feed = {"input": fr, "h": zeros, "c": zeros}
    seq.run(None, feed)
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        seq.run(None, feed)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    wall.sort()
    cpu.sort()
    result["sequence_us_per_frame"] = 1e6 * wall[len(wall) // 2] / len(fr)
    result["sequence_us_per_frame_best"] = 1e6 * wall[0] / len(fr)
    result["sequence_cpu_us_per_frame"] = 1e6 * cpu[len(cpu) // 2] / len(fr)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["fastlstm", "onnxruntime"],
                    choices=["fastlstm", "onnxruntime"])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return None
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTLSTM_NUM_THREADS="1")
    results = {}
    for engine in args.engines:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", engine,
                              "--repeats", str(args.repeats)],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"{engine:12s} failed: {last[:200]}")
            continue
        r = results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{engine:12s} silero_vad.onnx streamed: {r['stream_us_per_chunk']:7.1f} us/chunk "
              f"(best {r['stream_us_per_chunk_best']:.1f}, CPU {r['stream_cpu_us_per_chunk']:.1f})"
              f"   sequence, {r['chunks']} frames per call: "
              f"{r['sequence_us_per_frame']:6.1f} us/frame (best "
              f"{r['sequence_us_per_frame_best']:.1f}, CPU {r['sequence_cpu_us_per_frame']:.1f})")
    if len(results) == 2:
        f, o = results["fastlstm"], results["onnxruntime"]
        print(f"fastlstm / onnxruntime speed: streamed "
              f"{o['stream_us_per_chunk'] / f['stream_us_per_chunk']:.2f}x, sequence "
              f"{o['sequence_us_per_frame'] / f['sequence_us_per_frame']:.2f}x")
    return results


if __name__ == "__main__":
    main()
