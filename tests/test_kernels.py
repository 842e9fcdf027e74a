"""Kernel-level checks: activation accuracy, packing, the on-disk cache, threads."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import pack
from fastlstm.kernels import activations
from helpers import feeds, recurrent_model, run_ort


def test_activation_error_bounds():
    """The bounds stated in fastlstm/kernels/activations.py, on a float32 sample."""
    err = activations.measure_errors(limit=100.0, stride=101)
    assert err["exp_rel"] < 2e-7
    assert err["sigmoid_abs"] < 2.5e-7
    assert err["tanh_abs"] < 4e-7
    assert err["tanh_rel"] < 4e-7


@pytest.mark.parametrize("params", [None, ([0.7], [0.3])])
@pytest.mark.parametrize("name", list(activations.ACTIVATIONS))
def test_each_activation_against_onnxruntime(name, params):
    """Every activation, with default and given alpha/beta, over [-12, 12] and NaN.

    x = 0.7 is on the grid, so ThresholdedRelu's boundary (x > alpha) is hit."""
    x = np.concatenate([np.linspace(-12, 12, 241), [np.nan]]).astype(np.float32)
    arrays = {"X": x.reshape(-1, 1, 1), "W": np.ones((1, 1, 1), np.float32),
              "R": np.zeros((1, 1, 1), np.float32)}
    attrs = {"hidden_size": 1, "activations": [name]}
    if params:
        attrs["activation_alpha"], attrs["activation_beta"] = params
    model = recurrent_model("RNN", arrays, attrs, initializers=["W", "R"])
    got = fastlstm.InferenceSession(model.SerializeToString()).run(None, feeds(model, arrays))
    exp = run_ort(model, feeds(model, arrays))
    # NaN positions must match too: smooth functions keep NaN, while Relu-like
    # ones map it to 0 in onnxruntime, and we follow it.
    np.testing.assert_allclose(got[0], exp[0], atol=1e-6, rtol=1e-5, equal_nan=True)


def test_pack_panels_layout():
    H, K = 20, 3
    gates = [np.arange(H * K, dtype=np.float32).reshape(H, K) + 1000 * g for g in range(2)]
    p = pack.pack_panels(gates).reshape(2, K, 2, 16)   # [ntiles, K, G, TILE]
    assert p[1, 2, 1, 3] == gates[1][16 + 3, 2]
    assert p[1, 0, 0, 5] == 0  # unit 21 is padding


def test_second_process_loads_kernels_from_cache():
    code = ("import fastlstm.kernels.registry as r; from fastlstm.kernels import lstm, gru, rnn;"
            "print(min(lstm.lstm_step.cache_hits, gru.gru_step.cache_hits,"
            " rnn.rnn_step.cache_hits, r._gemm.cache_hits))")
    env = dict(os.environ)
    env.pop("FASTLSTM_CACHE", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env,
                         capture_output=True, text=True)
    assert int(out.stdout.strip()) >= 1


def test_kernel_cache_cleared_when_any_kernel_source_changes(tmp_path):
    """Numba keys a cached function on its own file only; fastlstm.kernels
    clears the cache when any kernel source (or config) changes."""
    from fastlstm.kernels import clear_stale_cache
    src = tmp_path / "kernels"
    src.mkdir()
    (src / "step.py").write_text("x = 1\n")
    (src / "helper.py").write_text("y = 1\n")
    extra = tmp_path / "config.py"
    extra.write_text("z = 1\n")
    cache = src / "__pycache__"
    cache.mkdir()

    def cached(name="step.fn-1.py311"):
        (cache / f"{name}.nbi").write_text("index")
        (cache / f"{name}.1.nbc").write_text("code")

    cached()
    assert clear_stale_cache((str(src),), (str(extra),)) is True     # no stamp yet
    assert not list(cache.glob("*.nb*"))
    cached()
    assert clear_stale_cache((str(src),), (str(extra),)) is False    # unchanged
    assert len(list(cache.glob("*.nb*"))) == 2
    (src / "helper.py").write_text("y = 2\n")                       # a dependency changes
    assert clear_stale_cache((str(src),), (str(extra),)) is True
    assert not list(cache.glob("*.nb*"))
    cached()
    extra.write_text("z = 2\n")
    assert clear_stale_cache((str(src),), (str(extra),)) is True
