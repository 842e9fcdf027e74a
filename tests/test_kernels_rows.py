"""The panel GEMM's row blocking and the front end's reusable scratch.

- ``panel_gemm`` at every row count 1-14 (each remainder after the 6-row
  blocks an AVX2 host uses, each tile shape the remainder goes through) against
  numpy in float64, and bit for bit the same as each row computed alone;
- ``Layer.direct`` (the specialised executor's entry) against ``Layer.run`` bit
  for bit, with states in either layout and with strides;
- a Layer reused for calls of growing and shrinking size, and by threads at
  once (only one of them gets the kept scratch), gives each call the answer of
  a fresh session.
"""
import threading

import numpy as np
import pytest
from numba import njit

import fastlstm
from fastlstm import pack
from fastlstm.bench import build_model
from fastlstm.kernels.gemm import panel_gemm


@njit
def _panel_gemm(M, K, N, a, wp, out):
    panel_gemm(M, K, N, 0, N, a.ctypes, 0, K, wp.ctypes, 0, out.ctypes, 0, N, 0)


@pytest.mark.parametrize("M", list(range(1, 15)))
def test_every_row_count(M):
    rng = np.random.default_rng(M)
    K, N = 29, 208           # 3 full panels and one of 16 columns
    a = rng.standard_normal((M, K)).astype(np.float32)
    wt = rng.standard_normal((K, N)).astype(np.float32)
    wp = pack.to_panels(wt)
    start = rng.standard_normal((M, N)).astype(np.float32)
    out = start.copy()
    _panel_gemm(M, K, N, a, wp, out)
    expected = start.astype(np.float64) + a.astype(np.float64) @ wt.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    for m in range(M):
        alone = start[m:m + 1].copy()
        _panel_gemm(1, K, N, np.ascontiguousarray(a[m:m + 1]), wp, alone)
        np.testing.assert_array_equal(alone[0], out[m])


def _layer(op, I, H, direction):
    s = fastlstm.InferenceSession(build_model(op, I, H, direction, True))
    runner = [r for r in s._plan.runners if r.node.layer is not None][0]
    return runner


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_direct_matches_run(op, direction):
    runner = _layer(op, 24, 40, direction)
    layer = runner.frontend_layer()
    direct = runner.direct()
    D = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(3)
    for T, B in ((1, 1), (3, 2), (1, 5)):
        x = rng.standard_normal((T, B, 24)).astype(np.float32)
        h0 = rng.standard_normal((D, B, 40)).astype(np.float32)
        c0 = rng.standard_normal((D, B, 40)).astype(np.float32) if op == "LSTM" else None
        got = direct(x, h0, c0)
        wy, wh, wc = runner._want
        want = layer.run(x, initial_h=h0, initial_c=c0, want_y=wy, want_yh=wh, want_yc=wc)
        assert len(got) == runner.n_out
        assert got[1] is not None
        for g, w in zip(got, want):
            if w is None:
                assert g is None
            else:
                np.testing.assert_array_equal(g, w)
        # a state with strides (a transposed view) gives the same answer
        hs = np.ascontiguousarray(h0.transpose(1, 0, 2)).transpose(1, 0, 2)
        assert not hs.flags.c_contiguous or B == 1 or D == 1
        got2 = direct(x, hs, c0)
        for g, w in zip(got2[1:], got[1:]):
            np.testing.assert_array_equal(g, w)


def test_direct_layout_1_states():
    """With layout 1 the states come as [B, D, H]; direct transposes them as
    RecurrentRunner's closure did."""
    runner = _layer("LSTM", 8, 16, "bidirectional")
    layer = runner.frontend_layer()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)       # [B, T, I]
    h0 = rng.standard_normal((3, 2, 16)).astype(np.float32)     # [B, D, H]
    c0 = rng.standard_normal((3, 2, 16)).astype(np.float32)
    layer.set_direct(1, True, True, True, 0, 3)
    y, yh, yc = layer.direct(x, h0, c0)
    y2, yh2, yc2 = layer.run(x, layout=1,
                             initial_h=np.ascontiguousarray(h0.transpose(1, 0, 2)),
                             initial_c=np.ascontiguousarray(c0.transpose(1, 0, 2)))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(yh, yh2)
    np.testing.assert_array_equal(yc, yc2)


def test_reused_scratch_growing_shrinking_and_threads():
    model = build_model("LSTM", 12, 20, "bidirectional", False)
    s = fastlstm.InferenceSession(model)
    name = s.get_inputs()[0].name
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((T, B, 12)).astype(np.float32)
          for T, B in ((1, 1), (30, 3), (2, 1), (50, 7), (1, 2), (30, 3))]
    want = [fastlstm.InferenceSession(model).run(None, {name: x})[0] for x in xs]
    for x, w in zip(xs, want):
        np.testing.assert_array_equal(s.run(None, {name: x})[0], w)
    errors = []

    def worker(k):
        try:
            for i in range(40):
                j = (i + k) % len(xs)
                np.testing.assert_array_equal(s.run(None, {name: xs[j]})[0], want[j])
        except Exception as e:         # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
