"""examples/vad_wav.py on the synthesized recording (tests/models/silero): the
speech segments it prints are the utterances the recording was made of.
"""
import importlib.util
import json
import os
import wave

import numpy as np
import pytest

import fastlstm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SILERO = os.path.join(ROOT, "tests", "models", "silero")


def _load_example():
    spec = importlib.util.spec_from_file_location(
        "vad_wav", os.path.join(ROOT, "examples", "vad_wav.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


vad_wav = _load_example()


def utterances():
    with open(os.path.join(SILERO, "speech.json")) as f:
        return [(u["start"], u["end"]) for u in json.load(f)["utterances"]]


def write_wav(path, samples, rate, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples, "<i2").tobytes())
    return str(path)


def run_example(argv, engine):
    return vad_wav.main(argv + ["--engine", engine])


def check_segments(segments):
    """Each segment overlaps an utterance, each utterance is found, and the
    edges are where the utterances start and end (within 0.3 s)."""
    utts = utterances()
    assert segments, "no speech found"
    for a, b in segments:
        assert a < b
        assert any(a < ue and b > us for us, ue in utts), f"segment {a:.2f}-{b:.2f} s is not speech"
    for us, ue in utts:
        hits = [(a, b) for a, b in segments if a < ue and b > us]
        assert hits, f"utterance {us:.2f}-{ue:.2f} s not detected"
        assert abs(hits[0][0] - us) < 0.3, (us, hits)
        assert abs(hits[-1][1] - ue) < 0.3, (ue, hits)


ENGINES = ["fastlstm", "onnxruntime"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rate", [16000, 8000])
def test_example_finds_the_utterances(tmp_path, capsys, engine, rate):
    x = np.load(os.path.join(SILERO, f"speech_{rate // 1000}k.npy"))
    wav = write_wav(tmp_path / "speech.wav", x, rate)
    segments = run_example([wav], engine)
    check_segments(segments)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(segments)
    for line, (a, b) in zip(out, segments):
        assert line.split() == [f"{a:.2f}", "s", "-", f"{b:.2f}", "s"]


@pytest.mark.parametrize("engine", ENGINES)
def test_example_48k_stereo(tmp_path, engine):
    """48 kHz stereo is brought to 16 kHz mono: each sample repeated three
    times in both channels averages back to the 16 kHz recording exactly."""
    x = np.load(os.path.join(SILERO, "speech_16k.npy"))
    stereo = np.repeat(np.repeat(x, 3)[:, None], 2, axis=1)
    wav = write_wav(tmp_path / "speech48.wav", stereo, 48000, channels=2)
    wav16 = write_wav(tmp_path / "speech16.wav", x, 16000)
    assert run_example([wav], engine) == run_example([wav16], engine)


def test_example_same_segments_both_engines(tmp_path):
    x = np.load(os.path.join(SILERO, "speech_16k.npy"))
    wav = write_wav(tmp_path / "speech.wav", x, 16000)
    ref = run_example([wav], "onnxruntime")
    got = run_example([wav], "fastlstm")
    assert got == ref


def test_example_refuses_other_rates(tmp_path, capsys):
    wav = write_wav(tmp_path / "speech44.wav", np.zeros(44100, np.int16), 44100)
    with pytest.raises(SystemExit) as e:
        vad_wav.main([wav, "--engine", "onnxruntime"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "44100 Hz" in err and "16000" in err and "sox" in err


def test_segments_hysteresis():
    """The segmentation alone: a dip shorter than min_silence does not split,
    a dip to between the two thresholds does not end speech, short bursts are
    dropped, padding widens and merges."""
    seg = vad_wav.speech_segments
    c = 0.032
    p = np.array([0.1] * 5 + [0.9] * 20 + [0.1] * 2 + [0.9] * 20 + [0.1] * 20)
    assert seg(p, c, len(p) * c, pad=0) == [(5 * c, 47 * c)]          # 64 ms dip kept
    p = np.array([0.1] * 5 + [0.9] * 20 + [0.4] * 10 + [0.9] * 5 + [0.1] * 20)
    assert seg(p, c, len(p) * c, pad=0) == [(5 * c, 40 * c)]          # 0.4: still speech
    p = np.array([0.1] * 5 + [0.9] * 3 + [0.1] * 20)                   # 96 ms burst
    assert seg(p, c, len(p) * c) == []
    p = np.array([0.9] * 20 + [0.1] * 4 + [0.9] * 20)                  # ends inside the audio
    d = len(p) * c
    assert seg(p, c, d, min_silence=0.1, pad=0.1) == [(0.0, d)]        # padding merges
    assert seg(p, c, d, min_silence=0.1, pad=0) == [(0.0, 20 * c), (24 * c, d)]
