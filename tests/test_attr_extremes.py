"""Extreme and non-finite attribute values, fastlstm against onnxruntime.

``clip`` at 0, at the smallest normal float32, tiny, huge, the largest float32
and infinity; activation alpha/beta at 0, tiny, huge and infinite; for LSTM
(with and without input_forget), GRU (both linear_before_reset) and RNN.

Three choices keep the comparison meaningful:
- parameters that make values grow (Affine alpha 1e30, a Relu-like gate, ...)
  run one step: over several steps the states grow until sums cancel and the
  results depend on the order of the additions, in both engines;
- infinite parameters that are not bounded by their activation (Affine,
  LeakyRelu, Elu, ScaledTanh alpha = inf) sit in the activation that makes the
  new state.  Anywhere else an inf meets a 0 or another inf inside the step,
  and onnxruntime's LSTM and GRU then part from IEEE arithmetic (their vector
  tanh turns NaN into +-1, some overflows become +-3.4e38), so the engines
  legitimately differ;
- onnxruntime refuses ``clip = 0`` for LSTM and GRU (``clip_ > 0``) but runs
  it for RNN.  fastlstm runs it for all three (every activation input clamped
  to 0).  For LSTM and GRU the oracle is onnxruntime with clip = the smallest
  normal float32, whose activations differ from those of 0 by less than any
  float32 output can show.
"""
import itertools

import numpy as np
import pytest

import fastlstm
import reference as ref
from helpers import GATES, SPEC_INPUTS, SPEC_OUTPUTS, feeds, recurrent_model, run_ort

VARIANTS = [("LSTM", {}), ("LSTM", {"input_forget": 1}), ("GRU", {"linear_before_reset": 0}),
            ("GRU", {"linear_before_reset": 1}), ("RNN", {})]
VARIANT_IDS = ["lstm", "lstm-input_forget", "gru-lbr0", "gru-lbr1", "rnn"]
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
TINY_NORMAL = float(np.finfo(np.float32).tiny)
INF = float("inf")


def make_case(op, attrs, T=4, B=3, I=5, H=19, seed=0, x_scale=3.0, direction="forward"):
    """A one-node model (weights as initializers) and its feed.  H = 19 leaves a
    partly padded tile; X is scaled up so that moderate clips bite."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    arrays = {"X": (rng.standard_normal((T, B, I)) * x_scale).astype(np.float32),
              "W": (rng.standard_normal((D, G * H, I)) * 0.5).astype(np.float32),
              "R": (rng.standard_normal((D, G * H, H)) * 0.5).astype(np.float32),
              "B": (rng.standard_normal((D, 2 * G * H)) * 0.5).astype(np.float32),
              "initial_h": rng.standard_normal((D, B, H)).astype(np.float32)}
    if op == "LSTM":
        arrays["initial_c"] = rng.standard_normal((D, B, H)).astype(np.float32)
        arrays["P"] = (rng.standard_normal((D, 3 * H)) * 0.5).astype(np.float32)
    attrs = dict(attrs, hidden_size=H, direction=direction)
    model = recurrent_model(op, arrays, attrs, initializers=["W", "R", "B", "P"])
    return model, arrays


def run_fastlstm(model, feed):
    return fastlstm.InferenceSession(model.SerializeToString()).run(None, feed)


def assert_outputs(op, got, expected, atol=1e-5, rtol=1e-4):
    for name, g, e in zip(SPEC_OUTPUTS[op], got, expected):
        assert g.shape == e.shape, name
        # inf and NaN must sit where onnxruntime has them
        np.testing.assert_allclose(g, e, atol=atol, rtol=rtol, equal_nan=True, err_msg=name)


CLIPS = [0.0, TINY_NORMAL, 1e-30, 0.5, 1e30, float(np.finfo(np.float32).max), INF]


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: f"clip={c:g}")
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_clip_extremes(variant, clip):
    """clip = inf used to give NaN: the kernels made their float32 one as
    ``clip * 0 + 1``.  Reverse direction too, so both directions of the clip
    path are exercised."""
    op, extra = variant
    for direction in ("forward", "bidirectional"):
        model, arrays = make_case(op, dict(extra, clip=clip), direction=direction)
        feed = feeds(model, arrays)
        got = run_fastlstm(model, feed)
        oracle = model
        if clip == 0.0 and op != "RNN":   # onnxruntime refuses clip = 0 here (see top)
            oracle, _ = make_case(op, dict(extra, clip=TINY_NORMAL), direction=direction)
        expected = run_ort(oracle, feed)
        for g in got:
            assert not np.isnan(g).any()
        assert_outputs(op, got, expected)


def test_clip_zero_clamps_every_activation_input():
    """RNN with clip = 0 and Affine(alpha=1, beta=0.25): every output is 0.25."""
    model, arrays = make_case("RNN", {"clip": 0.0, "activations": ["Affine"],
                                      "activation_alpha": [1.0], "activation_beta": [0.25]})
    y, y_h = run_fastlstm(model, feeds(model, arrays))
    assert np.all(y == np.float32(0.25)) and np.all(y_h == np.float32(0.25))


@pytest.mark.parametrize("clip", [-1.0, -INF, float("nan")])
def test_negative_or_nan_clip_is_refused(clip):
    model, arrays = make_case("GRU", {"clip": clip})
    with pytest.raises(fastlstm.InvalidModel, match="clip"):
        fastlstm.InferenceSession(model.SerializeToString())


# Activation parameters whose outputs stay bounded (in [0, 1], [-1, 1] or tiny),
# so that several steps can run and compound them: (name, alpha, beta).
BOUNDED = [("HardSigmoid", a, b) for a, b in itertools.product(
    [0.0, 1e-30, 1e30, -1e30, INF], [0.5, 1e-30, 1e30, -1e30])] + \
    [("ThresholdedRelu", a, 0.0) for a in (1e30, INF)] + \
    [("ScaledTanh", a, b) for a, b in ((1e-30, 1e30), (1.0, 1e30), (1.0, -INF), (0.0, INF),
                                       (1e-30, 1e-30))] + \
    [("Affine", a, b) for a, b in ((0.0, 0.0), (1e-30, 1e-30), (0.0, -0.5))]

# Parameters that let values grow huge: one step only, so that every such
# value reaches the outputs once (see top).
ONE_STEP = [("Affine", a, b) for a, b in ((1e30, 0.0), (-1e30, 1e30), (1e-30, -1e30))] + \
    [("LeakyRelu", a, 0.0) for a in (0.0, 1e-30, -1e-30, 1e30, -1e30)] + \
    [("Elu", a, 0.0) for a in (0.0, 1e-30, -1e-30, 1e30, -1e30)] + \
    [("ThresholdedRelu", a, 0.0) for a in (0.0, 1e-30, -1e30, -INF)] + \
    [("ScaledTanh", a, b) for a, b in ((1e30, 1e30), (-1e30, 0.5))]

# Infinite results (see top: only where the activation's output is the state).
INFINITE = [("Affine", a, b) for a, b in ((INF, 0.0), (1.0, INF), (1e-30, -INF))] + \
    [("LeakyRelu", INF, 0.0), ("Elu", INF, 0.0), ("ScaledTanh", INF, 1.0),
     ("ThresholdedRelu", float("nan"), 0.0)]


def assert_outputs_at_scale(op, got, expected, scale):
    """Compare outputs whose size is set by a parameter of magnitude ``scale``.

    A rounding error of the activation's input is multiplied by the parameter,
    so the absolute tolerance is 1e-5 * scale.  Where onnxruntime overflowed,
    fastlstm must have overflowed too (inf or NaN): where an inf meets a 0, or
    a NaN meets a clamp, IEEE arithmetic leaves room (onnxruntime's vector tanh
    turns NaN into +-1), so which of inf and NaN comes out is not compared.
    """
    for name, g, e in zip(SPEC_OUTPUTS[op], got, expected):
        assert g.shape == e.shape, name
        finite = np.isfinite(e)
        np.testing.assert_array_equal(np.isfinite(g), finite, err_msg=f"{name}: overflowed")
        np.testing.assert_allclose(g[finite], e[finite], atol=1e-5 * max(1.0, scale),
                                   rtol=1e-4, err_msg=name)


def _act_case(op, extra, pos, name, alpha, beta, T, direction="forward"):
    acts = list(DEFAULT_ACTS[op])
    acts[pos] = name
    if direction == "bidirectional":
        acts = acts + DEFAULT_ACTS[op]
    attrs = dict(extra, activations=acts, activation_alpha=[alpha], activation_beta=[beta])
    return make_case(op, attrs, T=T, direction=direction)


def _positions():
    return [(v, pos) for v in VARIANTS for pos in range(len(DEFAULT_ACTS[v[0]]))]


def _pos_ids():
    return [f"{vid}-act{pos}" for v, vid in zip(VARIANTS, VARIANT_IDS)
            for pos in range(len(DEFAULT_ACTS[v[0]]))]


@pytest.mark.parametrize("variant_pos", _positions(), ids=_pos_ids())
def test_bounded_activation_parameter_extremes(variant_pos):
    """Every activation position of every variant, four steps, both directions."""
    (op, extra), pos = variant_pos
    for name, alpha, beta in BOUNDED:
        model, arrays = _act_case(op, extra, pos, name, alpha, beta, T=4,
                                  direction="bidirectional")
        feed = feeds(model, arrays)
        try:
            assert_outputs(op, run_fastlstm(model, feed), run_ort(model, feed))
        except AssertionError as e:
            raise AssertionError(f"{name} alpha={alpha} beta={beta}: {e}") from None


@pytest.mark.parametrize("variant_pos", _positions(), ids=_pos_ids())
def test_growing_activation_parameter_extremes(variant_pos):
    """Huge and infinite results, compared after one step."""
    (op, extra), pos = variant_pos
    for name, alpha, beta in ONE_STEP:
        model, arrays = _act_case(op, extra, pos, name, alpha, beta, T=1)
        feed = feeds(model, arrays)
        scale = max([abs(v) for v in (alpha, beta) if np.isfinite(v)] + [1.0])
        try:
            assert_outputs_at_scale(op, run_fastlstm(model, feed), run_ort(model, feed), scale)
        except AssertionError as e:
            raise AssertionError(f"{name} alpha={alpha} beta={beta}: {e}") from None


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_infinite_activation_parameters(variant):
    """Infinite alpha/beta in the activation that makes the new state (LSTM h,
    GRU g, RNN f), one step: infinities reach Y and Y_h as onnxruntime's do."""
    op, extra = variant
    pos = len(DEFAULT_ACTS[op]) - 1
    for name, alpha, beta in INFINITE:
        model, arrays = _act_case(op, extra, pos, name, alpha, beta, T=1)
        feed = feeds(model, arrays)
        try:
            assert_outputs(op, run_fastlstm(model, feed), run_ort(model, feed))
        except AssertionError as e:
            raise AssertionError(f"{name} alpha={alpha} beta={beta}: {e}") from None


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_scaled_tanh_of_tiny_values_keeps_relative_accuracy(variant):
    """ScaledTanh(alpha=1e30, beta=1e-30) is the identity.  onnxruntime's tanh
    is accurate only in absolute terms near 0 (it returns 0 for tanh(1e-10)
    and 1.07e-6 for tanh(1e-6)), so the product with 1e30 is its error, not
    the function; here the float64 reference of tests/reference.py is the
    oracle (itself checked against onnxruntime in tests/test_reference.py)."""
    op, extra = variant
    for pos in range(len(DEFAULT_ACTS[op])):
        model, arrays = _act_case(op, extra, pos, "ScaledTanh", 1e30, 1e-30, T=3)
        feed = feeds(model, arrays)
        got = run_fastlstm(model, feed)
        acts = list(DEFAULT_ACTS[op])
        acts[pos] = "ScaledTanh"
        kwargs = dict(extra, hidden_size=19, activations=acts, activation_alpha=[1e30],
                      activation_beta=[1e-30])
        expected = getattr(ref, op.lower())(*[arrays.get(n) for n in SPEC_INPUTS[op]],
                                            **kwargs)
        assert_outputs(op, got, expected, atol=1e-4, rtol=1e-4)
