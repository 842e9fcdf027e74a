"""The command line, through its real entry point (a subprocess), with exit codes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm.cli import EXAMPLE_MODEL

pytestmark = pytest.mark.filterwarnings("ignore")


def cli(*args, check=None):
    out = subprocess.run([sys.executable, "-m", "fastlstm", *map(str, args)],
                         capture_output=True, text=True, timeout=600)
    if check is not None:
        assert out.returncode == check, (out.stdout, out.stderr)
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "example.fastlstm"
    out = cli("convert", EXAMPLE_MODEL, "-o", path, "--json", check=0)
    doc = json.loads(out.stdout)
    assert doc["pass"] and doc["bytes"] == os.path.getsize(path)
    return path


def test_convert_then_load(converted):
    s = fastlstm.InferenceSession(str(converted))
    ref = fastlstm.InferenceSession(EXAMPLE_MODEL)
    feed = {"X": np.ones((3, 1, 64), np.float32), "initial_h": np.zeros((2, 1, 128), np.float32),
            "initial_c": np.zeros((2, 1, 128), np.float32)}
    for a, b in zip(s.run(None, feed), ref.run(None, feed)):
        np.testing.assert_array_equal(a, b)


def test_verify_exit_codes(converted):
    out = cli("verify", EXAMPLE_MODEL, check=0)
    assert "PASS" in out.stdout
    cli("verify", converted, "--reference", EXAMPLE_MODEL, "--dim", "seq=3", check=0)
    out = cli("verify", EXAMPLE_MODEL, "--atol", "0", "--rtol", "0", "--json", check=1)
    assert json.loads(out.stdout)["pass"] is False
    out = cli("verify", converted, check=1)          # no ONNX reference given
    assert "--reference" in out.stderr


def test_run_saves_npz(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((4, 1, 64), np.float32))
    h = tmp_path / "h.npy"
    np.save(h, np.zeros((2, 1, 128), np.float32))
    out_file = tmp_path / "out.npz"
    cli("run", EXAMPLE_MODEL, "--input", f"X={x}", "--input", f"initial_h={h}",
        "--input", f"initial_c={h}", "-o", out_file, check=0)
    with np.load(out_file, allow_pickle=False) as z:
        assert z["Y"].shape == (4, 2, 1, 128)
    out = cli("run", EXAMPLE_MODEL, "--input", f"X={x}", check=1)    # initial_h missing
    assert "initial_h" in out.stderr


def test_info_text_and_json(converted):
    out = cli("info", converted, check=0)
    assert "LSTM bidirectional, input 64, hidden 128" in out.stdout
    doc = json.loads(cli("info", EXAMPLE_MODEL, "--json", check=0).stdout)
    assert doc["recurrent_layers"][0]["op"] == "LSTM" and doc["packed_bytes"] > 0


def test_info_names_unsupported_ops(tmp_path):
    from onnx import helper, save
    node = helper.make_node("Det", ["X"], ["Y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, [1, 1, 3, 3]),
                                        helper.make_tensor_value_info("W", 1, [1, 1, 1, 1])],
                          [helper.make_tensor_value_info("Y", 1, None)])
    p = tmp_path / "det.onnx"
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(p))
    out = cli("info", p, check=1)
    assert "Det" in out.stdout


def test_bad_usage_and_bad_files(tmp_path):
    assert cli("convert").returncode == 2
    assert cli("frobnicate").returncode == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    out = cli("info", bad, check=1)
    assert "error" in out.stderr


def test_ops_lists_supported():
    out = cli("ops", "--json", check=0)
    assert "LSTM" in json.loads(out.stdout)


def test_bench_writes_ratios_and_floors(tmp_path):
    out = tmp_path / "bench.json"
    targets = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "targets.json")
    r = cli("bench", "--cases", "stream", "--threads", "1", "--rounds", "1", "--repeats", "1",
            "--without", "torch", "openvino", "--json", str(out), "--targets", targets)
    assert r.returncode == 0, r.stderr
    assert "stream" in r.stdout and "floor" in r.stdout
    assert "2.50x" in r.stdout      # the target of stream at one thread, from targets.json
    data = json.loads(out.read_text())
    (row,) = data["results"]
    assert row["case"] == "stream" and row["threads"] == 1
    assert row["max_abs_err"] < 1e-5
    assert row["ratio"] == pytest.approx(row["onnxruntime_s"] / row["fastlstm_s"])
    # (the floor is an estimate from timings on a shared machine: comparing it
    # with the engines' times would be a timed assertion)
    assert row["floor_s"] > 0 and row["best_ratio"] > 0
    assert "torch_s" not in row and "openvino_s" not in row
    assert data["machine"]["peak_gflops_1core"] > 1


def test_demo_checks_and_times_as_bench_does():
    """The demo's numbers come from bench.measure (engines in processes of their
    own, alternating, medians), on the model and on the bench's stream cases."""
    r = cli("demo", "--json", "--repeats", "1", "--rounds", "1", check=0)
    doc = json.loads(r.stdout)
    assert doc["ok"] and [(c["T"], c["B"]) for c in doc["checks"]] == [(1, 1), (100, 1),
                                                                          (100, 16)]
    names = [row["case"] for row in doc["rows"]]
    assert names == ["model T=1 B=1", "model T=100 B=1", "stream", "gru-stream"]
    for row in doc["rows"]:
        assert row["ratio"] == pytest.approx(row["onnxruntime_us"] / row["fastlstm_us"])
        assert row["max_abs_err"] <= 1e-5


def test_demo_timing_is_the_bench_measurement(monkeypatch, capsys):
    from fastlstm import bench, cli as cli_mod
    calls = []

    def fake_measure(cases, threads, rounds, repeats, engines=("fastlstm", "onnxruntime")):
        calls.append((dict(cases), threads, rounds, repeats))
        return {"fastlstm": {name: 1e-3 for name in cases},
                "onnxruntime": {name: 2e-3 for name in cases}}
    monkeypatch.setattr(bench, "measure", fake_measure)
    assert cli_mod.main(["demo", "--repeats", "2", "--rounds", "4"]) == 0
    (cases, threads, rounds, repeats), = calls
    assert (threads, rounds, repeats) == (1, 4, 2)
    assert cases["stream"] == bench.TABLE["stream"]
    assert cases["model T=100 B=1"]["model"] == os.path.abspath(EXAMPLE_MODEL)
    assert "2.00x" in capsys.readouterr().out
