"""The kernels on their own, against numpy: no session, no front end.

- ``panel_gemm`` and ``gemm_bias`` (the register tiles of ``kernels.simd``)
  on sizes that are not multiples of anything: K odd, N a multiple of the
  16-wide tile but not of the 64-column panel, 1 row, a few rows, many rows,
  column ranges; and the reversed panel order gives the same bits;
- each step kernel (LSTM, GRU both variants, RNN), called through its C
  entry point with buffers laid out as the front end lays them out, against
  the ONNX equations in float64 (``tests/reference.py``'s activations); a step
  split into tile ranges, a GRU step run as its two phases, and the reversed
  panel order each give the same bits as the whole step.

The projection a step reads is computed here with numpy from the packed W and
bias (``pack.<op>`` per direction), as the input GEMM would.
"""
import ctypes

import numpy as np
import pytest
from numba import njit

import reference as ref
from fastlstm import config, pack
from fastlstm.kernels import common
from fastlstm.kernels.activations import ACTIVATIONS
from fastlstm.kernels.gemm import gemm_bias, panel_gemm
from fastlstm.ops.recurrent_ops import RECURRENT_OPS

TILE, PANEL = config.TILE, config.PANEL


@njit
def _panel_gemm(M, K, N, c0, c1, a, lda, wp, out, ldo, rev):
    panel_gemm(M, K, N, c0, c1, a.ctypes, 0, lda, wp.ctypes, 0, out.ctypes, 0, ldo, rev)


@njit
def _gemm_bias(M, K, N, c0, c1, x, wp, bias, out):
    gemm_bias(M, K, N, c0, c1, x.ctypes, wp.ctypes, bias.ctypes, out.ctypes)


def _ranges(N):
    """Column ranges a caller may ask for: all, and panel-aligned parts."""
    out = [(0, N)]
    if N > PANEL:
        out += [(0, PANEL), (PANEL, N)]
    return out


@pytest.mark.parametrize("M", [1, 3, 4, 5, 67])
@pytest.mark.parametrize("K", [1, 7, 33, 130])
@pytest.mark.parametrize("N", [16, 48, 64, 80, 208])
def test_panel_gemm_against_numpy(M, K, N):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    a = rng.standard_normal((M, K)).astype(np.float32)
    wt = rng.standard_normal((K, N)).astype(np.float32)
    wp = pack.to_panels(wt)
    start = rng.standard_normal((M, N)).astype(np.float32)
    expected = start.astype(np.float64) + a.astype(np.float64) @ wt.astype(np.float64)
    for c0, c1 in _ranges(N):
        outs = []
        for rev in (0, 1):
            out = start.copy()
            _panel_gemm(M, K, N, c0, c1, a, K, wp, out, N, rev)
            outs.append(out)
            np.testing.assert_allclose(out[:, c0:c1], expected[:, c0:c1], rtol=1e-5,
                                       atol=1e-5 * np.sqrt(K))
            # columns outside the range are not touched
            np.testing.assert_array_equal(out[:, :c0], start[:, :c0])
            np.testing.assert_array_equal(out[:, c1:], start[:, c1:])
        np.testing.assert_array_equal(outs[0], outs[1])


def test_panel_gemm_row_tiling_does_not_change_bits():
    """A row's result is the same chain of FMAs whether it is computed in a
    4-row tile or alone."""
    rng = np.random.default_rng(5)
    M, K, N = 9, 37, 80
    a = rng.standard_normal((M, K)).astype(np.float32)
    wp = pack.to_panels(rng.standard_normal((K, N)).astype(np.float32))
    together = np.zeros((M, N), np.float32)
    _panel_gemm(M, K, N, 0, N, a, K, wp, together, N, 0)
    for m in range(M):
        alone = np.zeros((1, N), np.float32)
        _panel_gemm(1, K, N, 0, N, np.ascontiguousarray(a[m:m + 1]), K, wp, alone, N, 0)
        np.testing.assert_array_equal(alone[0], together[m])


@pytest.mark.parametrize("M,K,N", [(1, 1, 16), (2, 5, 48), (7, 33, 80), (130, 64, 208)])
def test_gemm_bias_against_numpy(M, K, N):
    rng = np.random.default_rng(M + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    wt = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    expected = x.astype(np.float64) @ wt.astype(np.float64) + bias
    for c0, c1 in _ranges(N):
        out = np.full((M, N), np.nan, np.float32)
        _gemm_bias(M, K, N, c0, c1, x, pack.to_panels(wt), bias, out)
        np.testing.assert_allclose(out[:, c0:c1], expected[:, c0:c1], rtol=1e-5,
                                   atol=1e-5 * np.sqrt(K))
        assert np.isnan(out[:, :c0]).all() and np.isnan(out[:, c1:]).all()


# --- step kernels ------------------------------------------------------------

_F = ctypes.POINTER(ctypes.c_float)
_I = ctypes.POINTER(ctypes.c_int64)


def _fp(a):
    return a.ctypes.data_as(_F)


def _ip(a):
    return a.ctypes.data_as(_I)


class StepCase:
    """One direction of a layer, packed, with a batch of rows ready for one step."""

    def __init__(self, op, H, B, acts=None, clip=None, flag=0, seed=0, I=5):
        desc = RECURRENT_OPS[op]
        rng = np.random.default_rng(seed)
        G = desc.gates
        self.op, self.desc, self.H, self.B, self.flag, self.clip = op, desc, H, B, flag, clip
        self.names = acts or list(desc.default_activations)
        self.acts = [ACTIVATIONS[n] for n in self.names]
        self.W = (rng.standard_normal((G * H, I)) * 0.5).astype(np.float32)
        self.R = (rng.standard_normal((G * H, H)) * 0.5).astype(np.float32)
        self.Bias = (rng.standard_normal(2 * G * H) * 0.5).astype(np.float32)
        self.P = (rng.standard_normal(3 * H) * 0.5).astype(np.float32) if desc.has_cell \
            else None
        self.x = rng.standard_normal((B, I)).astype(np.float32)
        self.h = rng.standard_normal((B, H)).astype(np.float32)
        self.c = rng.standard_normal((B, H)).astype(np.float32)
        Wt, bias, self.Rp, self.rb, self.Pp = desc.pack_direction(
            self.W, self.R, self.Bias, self.P, H, flag)
        self.ip, self.fp = pack._params(H, self.acts, flag, clip)
        self.Hp = Hp = pack.padded(H)
        # the projection as the input GEMM makes it: packed column order, rows G*Hp apart
        self.xp = (self.x.astype(np.float64) @ Wt.astype(np.float64) + bias).astype(np.float32)

    def run(self, tiles=None, phase=0, order=0, state=None):
        """One step; returns (h_out [B, H], c [B, H], y [B, H]).  ``tiles``: (p0, p1)
        or a list of them, run one after the other (as threads would at once);
        ``state``: (h_out, c, y, ws) buffers to continue in (for phases)."""
        B, H, Hp, G = self.B, self.H, self.Hp, self.desc.gates
        h_in = np.zeros((B, Hp), np.float32)
        h_in[:, :H] = self.h
        if state is None:
            h_out = np.zeros((B, Hp), np.float32)
            c = np.zeros((B, Hp), np.float32)
            c[:, :H] = self.c
            y = np.zeros((B, H), np.float32)
            ws = np.zeros(self.desc.ws_floats(B, Hp), np.float32)
        else:
            h_out, c, y, ws = state
        ip = np.zeros(common.IP_LEN + 1, np.int64)
        ip[:common.IP_LEN] = self.ip
        ip[common.IP_BATCH] = B
        ip[common.IP_PHASE] = phase
        ip[common.IP_ORDER] = order
        xoff = np.arange(B, dtype=np.int64) * G * Hp
        yoff = np.arange(B, dtype=np.int64) * H
        ranges = tiles if isinstance(tiles, list) else [tiles or (0, Hp // TILE)]
        for p0, p1 in ranges:
            ip[common.IP_P0], ip[common.IP_P1] = p0, p1
            self.desc.step.ctypes(B, _fp(self.xp), _ip(xoff), _fp(self.Rp), _fp(self.rb),
                                  _fp(self.Pp), _fp(h_in), _fp(h_out), _fp(c), _fp(y),
                                  _ip(yoff), _fp(ws), _ip(ip), _fp(self.fp))
        self.state = (h_out, c, y, ws)
        return h_out[:, :H].copy(), c[:, :H].copy(), y.copy()

    def expected(self):
        """(h, c) after one step, from the ONNX equations in float64."""
        H, G = self.H, self.desc.gates
        f = [ref.activation(n, alpha, beta) for n, (_, alpha, beta) in zip(self.names, self.acts)]
        cl = (lambda v: np.clip(v, -self.clip, self.clip)) if self.clip is not None else \
            (lambda v: v)
        x, h, c = (a.astype(np.float64) for a in (self.x, self.h, self.c))
        W, R, Bi = (a.astype(np.float64) for a in (self.W, self.R, self.Bias))
        Wb, Rb = Bi[:G * H], Bi[G * H:]
        if self.op == "LSTM":
            g = x @ W.T + h @ R.T + Wb + Rb
            gi, go, gf, gc = np.split(g, 4, axis=1)
            pi, po, pf = np.split(self.P.astype(np.float64), 3)
            i = f[0](cl(gi + pi * c))
            fg = 1 - i if self.flag else f[0](cl(gf + pf * c))
            cn = fg * c + i * f[1](cl(gc))
            o = f[0](cl(go + po * cn))
            return o * f[2](cn), cn
        if self.op == "GRU":
            Wz, Wr, Wh = np.split(W, 3)
            Rz, Rr, Rh = np.split(R, 3)
            Wbz, Wbr, Wbh = np.split(Wb, 3)
            Rbz, Rbr, Rbh = np.split(Rb, 3)
            z = f[0](cl(x @ Wz.T + h @ Rz.T + Wbz + Rbz))
            r = f[0](cl(x @ Wr.T + h @ Rr.T + Wbr + Rbr))
            if self.flag:
                hh = f[1](cl(x @ Wh.T + r * (h @ Rh.T + Rbh) + Wbh))
            else:
                hh = f[1](cl(x @ Wh.T + (r * h) @ Rh.T + Rbh + Wbh))
            return (1 - z) * hh + z * h, c
        return f[0](cl(x @ W.T + h @ R.T + Wb + Rb)), c


STEP_VARIANTS = [("LSTM", 0), ("LSTM", 1), ("GRU", 0), ("GRU", 1), ("RNN", 0)]
GENERAL_ACTS = {"LSTM": ["HardSigmoid", "Softsign", "Elu"], "GRU": ["HardSigmoid", "Softsign"],
                "RNN": ["LeakyRelu"]}


@pytest.mark.parametrize("H", [1, 19, 64, 80])
@pytest.mark.parametrize("B", [1, 3, 9])
@pytest.mark.parametrize("variant", STEP_VARIANTS, ids=lambda v: f"{v[0]}-flag{v[1]}")
@pytest.mark.parametrize("kind", ["default", "general", "clip"])
def test_step_kernel_against_numpy(variant, B, H, kind):
    op, flag = variant
    acts = GENERAL_ACTS[op] if kind == "general" else None
    case = StepCase(op, H, B, acts=acts, clip=0.7 if kind == "clip" else None, flag=flag,
                    seed=H * 100 + B)
    h, c, y = case.run()
    eh, ec = case.expected()
    np.testing.assert_allclose(h, eh, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(y, h)
    if case.desc.has_cell:
        np.testing.assert_allclose(c, ec, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", STEP_VARIANTS, ids=lambda v: f"{v[0]}-flag{v[1]}")
@pytest.mark.parametrize("kind", ["default", "general"])
def test_step_split_reordered_and_phased_give_the_same_bits(variant, kind):
    """What the front end does with threads (tile ranges of whole panels, a GRU
    step as two phases with every range's phase 1 before any phase 2) and with
    one-step calls (reversed panel order) changes no bit."""
    op, flag = variant
    H, B = 150, 3                       # 10 tiles: ranges of 4, 4 and 2 tiles
    acts = GENERAL_ACTS[op] if kind == "general" else None
    case = StepCase(op, H, B, acts=acts, flag=flag, seed=7)
    whole = case.run()
    ranges = [(0, 4), (4, 8), (8, 10)]
    if case.desc.two_phase(flag):
        case.run(ranges, phase=1)
        split = case.run(ranges, phase=2, state=case.state)
    else:
        split = case.run(ranges)
    reordered = case.run(order=1)
    for a, b, c in zip(whole, split, reordered):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
