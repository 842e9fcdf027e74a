"""Find the speech in a WAV file with Silero VAD, run by fastlstm.

    python examples/vad_wav.py recording.wav
    python examples/vad_wav.py recording.wav --engine onnxruntime   # to compare

The WAV file must be 16-bit PCM at 16 kHz or 8 kHz; stereo is averaged to
mono, and a rate that is a whole multiple of 16 kHz or 8 kHz (32, 48 kHz...)
is brought down by averaging each group of samples.  Anything else: convert
it first, e.g. `sox in.wav -r 16000 -c 1 -b 16 out.wav`.

The audio is streamed as Silero's own ONNX wrapper streams it: chunks of 512
samples at 16 kHz (256 at 8 kHz), each preceded by the last 64 (32) samples of
the previous chunk, the model's `state` carried from one call to the next.
Each chunk gets a speech probability; speech starts where it reaches the
threshold and ends after enough time below threshold - 0.15.  Prints one line
per speech segment: start and end in seconds.
"""
import argparse
import os
import sys
import time
import wave

import numpy as np

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                             "tests", "models", "silero", "silero_vad.onnx")
CHUNK = {16000: 512, 8000: 256}       # new samples per call
CONTEXT = {16000: 64, 8000: 32}       # samples carried over from the previous chunk


def read_wav(path):
    """(mono float32 samples in [-1, 1), sample rate 16000 or 8000)."""
    with wave.open(path, "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples; needs 16-bit PCM "
                         f"(convert: sox in.wav -r 16000 -c 1 -b 16 out.wav)")
    x = np.frombuffer(raw, "<i2").astype(np.float32).reshape(-1, channels).mean(axis=1)
    for target in (16000, 8000):
        if rate % target == 0:
            k = rate // target
            if k > 1:      # average each group of k samples: a crude low-pass, then decimate
                x = x[:len(x) // k * k].reshape(-1, k).mean(axis=1)
            return (x / 32768.0).astype(np.float32), target
    raise ValueError(f"{path}: {rate} Hz; needs 16000 or 8000 Hz (or a whole multiple) "
                     f"(convert: sox in.wav -r 16000 -c 1 -b 16 out.wav)")


class SileroVAD:
    """One audio stream through a Silero VAD model: call it with each chunk of
    512 samples (16 kHz) or 256 (8 kHz); it returns the speech probability and
    keeps the model's state and the chunk's tail for the next call."""

    def __init__(self, session, sample_rate):
        if sample_rate not in CHUNK:
            raise ValueError("Silero VAD runs at 16000 or 8000 Hz")
        self.session = session
        self.sample_rate = sample_rate
        self.chunk = CHUNK[sample_rate]
        self.takes_sr = any(i.name == "sr" for i in session.get_inputs())
        self.reset()

    def reset(self):
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros((1, CONTEXT[self.sample_rate]), np.float32)

    def __call__(self, chunk):
        x = np.concatenate([self.context, np.asarray(chunk, np.float32).reshape(1, -1)], axis=1)
        feed = {"input": x, "state": self.state}
        if self.takes_sr:
            feed["sr"] = np.array(self.sample_rate, np.int64)
        prob, self.state = self.session.run(["output", "stateN"], feed)
        self.context = x[:, -self.context.shape[1]:]
        return float(prob[0, 0])


def speech_probabilities(vad, audio):
    """One probability per chunk; the last chunk is padded with zeros."""
    n = vad.chunk
    audio = np.concatenate([audio, np.zeros((-len(audio)) % n, np.float32)])
    return np.array([vad(audio[i:i + n]) for i in range(0, len(audio), n)])


def speech_segments(probs, chunk_seconds, duration, threshold=0.5, min_speech=0.25,
                    min_silence=0.1, pad=0.03):
    """[(start, end)] in seconds from per-chunk probabilities, with hysteresis:
    speech starts at the first chunk >= threshold and ends where the
    probability drops below threshold - 0.15 for at least min_silence seconds
    (a chunk back at threshold or above cancels a pending end); segments
    shorter than min_speech are dropped, the rest widened by pad each side."""
    low = max(threshold - 0.15, 0.01)
    found, start, quiet_since = [], None, None
    for i, p in enumerate(probs):
        t = i * chunk_seconds
        if start is None:
            if p >= threshold:
                start, quiet_since = t, None
            continue
        if p >= threshold:
            quiet_since = None
        elif p < low:
            if quiet_since is None:
                quiet_since = t
            if t + chunk_seconds - quiet_since >= min_silence:
                found.append((start, quiet_since))
                start, quiet_since = None, None
    if start is not None:
        found.append((start, quiet_since if quiet_since is not None else duration))
    segments = []
    for a, b in found:
        if b - a < min_speech:
            continue
        a, b = max(0.0, a - pad), min(duration, b + pad)
        if segments and a <= segments[-1][1]:
            segments[-1] = (segments[-1][0], b)
        else:
            segments.append((a, b))
    return segments


def open_session(model, engine):
    if engine == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    import fastlstm
    return fastlstm.InferenceSession(model)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Print the speech segments of a WAV file (Silero VAD).")
    ap.add_argument("wav", help="16-bit PCM WAV, 16 or 8 kHz (or a multiple), mono or stereo")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="Silero VAD ONNX file (default: %(default)s)")
    ap.add_argument("--engine", choices=["fastlstm", "onnxruntime"], default="fastlstm")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--min-speech-ms", type=float, default=250)
    ap.add_argument("--min-silence-ms", type=float, default=100)
    ap.add_argument("--pad-ms", type=float, default=30)
    args = ap.parse_args(argv)

    try:
        audio, rate = read_wav(args.wav)
    except (ValueError, wave.Error, EOFError) as e:
        ap.exit(2, f"error: {e}\n")
    vad = SileroVAD(open_session(args.model, args.engine), rate)
    vad(np.zeros(vad.chunk, np.float32))    # warm-up: the first call prepares the run
    vad.reset()
    t0 = time.perf_counter()
    probs = speech_probabilities(vad, audio)
    elapsed = time.perf_counter() - t0
    segments = speech_segments(probs, vad.chunk / rate, len(audio) / rate, args.threshold,
                               args.min_speech_ms / 1000, args.min_silence_ms / 1000,
                               args.pad_ms / 1000)
    for a, b in segments:
        print(f"{a:8.2f} s  - {b:8.2f} s")
    print(f"{len(segments)} speech segments in {len(audio) / rate:.2f} s of audio at {rate} Hz; "
          f"{len(probs)} chunks, {1e6 * elapsed / max(len(probs), 1):.0f} us per chunk "
          f"({args.engine})", file=sys.stderr)
    return segments


if __name__ == "__main__":
    try:
        main()
    except Exception as e:       # fastlstm.FastLSTMError names what it refused and where
        if type(e).__module__.split(".")[0] != "fastlstm":
            raise
        sys.exit(f"error: fastlstm: {type(e).__name__}: {e}")
