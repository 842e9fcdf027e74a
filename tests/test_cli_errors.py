"""The command line never shows a Python traceback: every bad argument, path
or model is ``fastlstm: error: ...`` with a non-zero exit (issue 16)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastlstm import cli
from fastlstm.cli import EXAMPLE_MODEL

pytestmark = pytest.mark.filterwarnings("ignore")


def run_cli(capsys, *args):
    """(exit status, stdout, stderr) of fastlstm.cli.main in this process."""
    try:
        status = cli.main([str(a) for a in args])
    except SystemExit as e:        # argparse's own usage errors
        status = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return status, out, err


def refused(capsys, *args, match):
    status, out, err = run_cli(capsys, *args)
    assert status not in (0, None), (out, err)
    assert match in err, err
    return err


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """A small forward LSTM whose dims are named 'time' and 'n' (not seq/batch)."""
    rng = np.random.default_rng(3)
    H, I = 8, 5
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("W", (1, 4 * H, I)), ("R", (1, 4 * H, H)))]
    node = helper.make_node("LSTM", ["X", "W", "R", "", "", "h0"], ["Y", "Y_h"],
                            hidden_size=H, name="lstm")
    g = helper.make_graph(
        [node], "small",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["time", "n", I]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "n", H])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)], inits)
    path = tmp_path_factory.mktemp("cli_errors") / "small.onnx"
    path.write_bytes(helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString())
    return path


@pytest.fixture()
def example_inputs(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name, shape in (("X", (3, 1, 64)), ("initial_h", (2, 1, 128)),
                        ("initial_c", (2, 1, 128))):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], rng.standard_normal(shape).astype(np.float32))
    return [f"--input={k}={v}" for k, v in paths.items()]


def test_convert_output_paths(capsys, tmp_path, other_model):
    refused(capsys, "convert", other_model, "-o", tmp_path / "missing" / "m.fastlstm",
            "--no-verify", match="does not exist")
    refused(capsys, "convert", other_model, "-o", tmp_path, "--no-verify", match="folder")
    # a FIFO (or a device) is never replaced by a regular file
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused(capsys, "convert", other_model, "-o", fifo, "--no-verify",
            match="not a regular file")
    assert not os.path.isfile(fifo) and os.path.exists(fifo)
    link = tmp_path / "link.fastlstm"
    os.symlink(tmp_path / "target.fastlstm", link)
    refused(capsys, "convert", other_model, "-o", link, "--no-verify",
            match="not a regular file")
    assert os.path.islink(link)
    # a regular file is replaced, and no temporary file is left behind
    out = tmp_path / "m.fastlstm"
    out.write_bytes(b"old")
    status, _, err = run_cli(capsys, "convert", other_model, "-o", out, "--no-verify")
    assert status == 0, err
    assert out.read_bytes()[:8] == b"FASTLSTM"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.fastlstm",
                                                          "m.fastlstm"]


def test_save_refuses_what_is_not_a_regular_file(tmp_path, other_model):
    import fastlstm
    from fastlstm import fileformat
    from fastlstm.onnx_import import load_graph
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    graph = load_graph(str(other_model))
    for target, match in ((fifo, "not a regular file"), (tmp_path, "folder"),
                          (tmp_path / "no" / "x.fastlstm", "does not exist")):
        with pytest.raises(fastlstm.FastLSTMError, match=match):
            fileformat.save(graph, target)


def test_run_output_paths(capsys, tmp_path, example_inputs):
    refused(capsys, "run", EXAMPLE_MODEL, *example_inputs, "-o",
            tmp_path / "missing" / "out.npz", match="does not exist")
    status, out, err = run_cli(capsys, "run", EXAMPLE_MODEL, *example_inputs, "-o",
                               tmp_path / "outputs.bin")
    assert status == 0, err
    saved = tmp_path / "outputs.bin.npz"
    assert f"saved to {saved}" in out and saved.is_file()
    assert sorted(np.load(saved)) == ["Y", "Y_c", "Y_h"]


def test_verify_dims(capsys):
    refused(capsys, "verify", EXAMPLE_MODEL, "--dim", "seq=abc", match="integers >= 1")
    refused(capsys, "verify", EXAMPLE_MODEL, "--dim", "seq=-3", match="integers >= 1")
    refused(capsys, "verify", EXAMPLE_MODEL, "--dim", "batch=100000000", match="MiB")
    refused(capsys, "verify", EXAMPLE_MODEL, "--dim", "time=3", match="no such dimension")


def test_verify_reference(capsys, tmp_path, other_model):
    refused(capsys, "verify", EXAMPLE_MODEL, "--reference", tmp_path / "nothing.onnx",
            match="does not exist")
    refused(capsys, "verify", EXAMPLE_MODEL, "--reference", other_model,
            match="different model")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    refused(capsys, "verify", EXAMPLE_MODEL, "--reference", garbage, match="onnxruntime")


def test_counts_must_be_positive(capsys):
    for args in (("demo", "--repeats", "0"), ("demo", "--threads", "0"),
                 ("bench", "--rounds", "0"), ("bench", "--threads", "0"),
                 ("bench", "--repeats", "-1"), ("bench", "--rounds", "x")):
        status, _, err = run_cli(capsys, *args)
        assert status == 2 and "error: argument" in err, (args, err)


def test_bench_checks_before_running(capsys, tmp_path):
    refused(capsys, "bench", "--json", tmp_path / "missing" / "r.json", match="does not exist")
    refused(capsys, "bench", "--png", tmp_path, match="folder")
    err = refused(capsys, "bench", "--cases", "nosuchcase", match="nosuchcase")
    assert "seq256" in err


def test_demo_other_models(capsys, tmp_path, other_model):
    status, out, err = run_cli(capsys, "demo", "--model", other_model, "--repeats", "1")
    assert status == 0, err
    assert "match onnxruntime" in out
    packed = tmp_path / "small.fastlstm"
    assert run_cli(capsys, "convert", other_model, "-o", packed, "--no-verify")[0] == 0
    refused(capsys, "demo", "--model", packed, match="ONNX")


def test_broken_pipe_is_quiet():
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "ops"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()            # the reader is gone before the first line is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) != 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err
