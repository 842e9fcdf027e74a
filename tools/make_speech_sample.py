"""Make the speech recording the Silero VAD tests stream: tests/models/silero/.

Needs espeak-ng and sox (Debian: `apt-get install -y espeak-ng sox`); the tests
only read what this writes:

  speech_16k.npy   int16, 16 kHz mono: English sentences separated by silence,
                   with low-level noise over the whole recording
  speech_8k.npy    the same recording resampled to 8 kHz by sox
  speech.json      where each utterance starts and ends (seconds), and the text

Each sentence is synthesized by espeak-ng, resampled to 16 kHz by sox, trimmed
to its first and last audible sample, and placed after a pause.  The noise is
seeded, so the result depends only on the espeak-ng and sox versions.

    python tools/make_speech_sample.py [--out tests/models/silero]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import wave

import numpy as np

RATE = 16000
# (pause before, text): the pauses are the silences the VAD must find.
UTTERANCES = [
    (0.6, "The quick brown fox jumps over the lazy dog."),
    (1.5, "Is anybody listening?"),
    (1.2, "Please call me back tomorrow."),
]
TRAILING_SILENCE = 0.8
NOISE_RMS = 60.0          # int16 units: about -55 dBFS of white noise
SPEECH_PEAK = 16000.0     # each utterance scaled to this peak
SEED = 20260126


def read_wav_int16(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


def synthesize(text, tmp):
    """espeak-ng -> sox (16 kHz, mono, 16-bit) -> float array trimmed of silence."""
    raw = os.path.join(tmp, "raw.wav")
    conv = os.path.join(tmp, "conv.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", raw, text], check=True)
    subprocess.run(["sox", "-D", raw, "-r", str(RATE), "-c", "1", "-b", "16", conv, "rate", "-v"],
                   check=True)
    rate, x = read_wav_int16(conv)
    assert rate == RATE
    x = x.astype(np.float64)
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    x = x[loud[0]:loud[-1] + 1]
    return x * (SPEECH_PEAK / np.abs(x).max())


def resample_8k(x16, tmp):
    src = os.path.join(tmp, "s16.wav")
    dst = os.path.join(tmp, "s8.wav")
    with wave.open(src, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(x16.astype("<i2").tobytes())
    subprocess.run(["sox", "-D", src, "-r", "8000", dst, "rate", "-v"], check=True)
    rate, x8 = read_wav_int16(dst)
    assert rate == 8000
    return x8.astype(np.int16)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "models", "silero"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    pieces, segments, t = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for pause, text in UTTERANCES:
            pieces.append(np.zeros(int(pause * RATE)))
            t += int(pause * RATE)
            speech = synthesize(text, tmp)
            segments.append({"start": round(t / RATE, 4),
                             "end": round((t + len(speech)) / RATE, 4),
                             "text": text})
            pieces.append(speech)
            t += len(speech)
        pieces.append(np.zeros(int(TRAILING_SILENCE * RATE)))
        x = np.concatenate(pieces)
        x += np.random.default_rng(SEED).normal(0.0, NOISE_RMS, x.shape)
        x16 = np.clip(np.round(x), -32768, 32767).astype(np.int16)
        x8 = resample_8k(x16, tmp)

    np.save(os.path.join(args.out, "speech_16k.npy"), x16)
    np.save(os.path.join(args.out, "speech_8k.npy"), x8)
    versions = {}
    for tool in ("espeak-ng", "sox"):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True)
        line = (out.stdout or out.stderr).strip().splitlines()[0]
        versions[tool] = " ".join(line.split("Data at:")[0].split())
    meta = {"sample_rate": RATE, "samples": int(len(x16)), "seconds": round(len(x16) / RATE, 4),
            "utterances": segments, "made_by": "tools/make_speech_sample.py",
            "tools": versions}
    with open(os.path.join(args.out, "speech.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{len(x16) / RATE:.2f} s, {len(segments)} utterances:", file=sys.stderr)
    for s in segments:
        print(f"  {s['start']:6.2f} - {s['end']:6.2f}  {s['text']}", file=sys.stderr)


if __name__ == "__main__":
    main()
