"""A randomized matrix of LSTM/GRU/RNN cases, fastlstm against onnxruntime.

Every attribute and optional input of the three ops appears in the matrix:
directions, hidden sizes 1/3/37/130, batch 1 and 7, T 1 and 50, mixed
sequence_lens including 0 and T, initial states that differ per direction,
peepholes, clip, input_forget / linear_before_reset, every activation with
alpha/beta, weights as initializers or as graph inputs, any subset of outputs.
onnxruntime refuses layout=1, so those cases are checked against the numpy
reference (itself checked against onnx.reference in test_reference.py).
"""
import numpy as np
import pytest

import fastlstm
import reference as ref
from helpers import (GATES, SPEC_OUTPUTS, assert_close, feeds, random_weights, recurrent_model,
                     run_ort)

ACT_NAMES = ["Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu",
             "ScaledTanh", "HardSigmoid", "Elu", "Softsign", "Softplus"]
N_ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}


def make_case(op, seed):
    """A reproducible random case: (arrays, attrs, initializers, outputs, layout)."""
    rng = np.random.default_rng(seed)
    H = int(rng.choice([1, 3, 37, 130]))
    Bn = int(rng.choice([1, 7]))
    T = int(rng.choice([1, 50]))
    I = int(rng.choice([1, 5, 33]))
    direction = str(rng.choice(["forward", "reverse", "bidirectional"]))
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    scale = 1.0 / np.sqrt(max(H, I))
    arrays = {"X": rng.standard_normal((T, Bn, I)).astype(np.float32),
              "W": (rng.standard_normal((D, G * H, I)) * scale).astype(np.float32),
              "R": (rng.standard_normal((D, G * H, H)) * scale).astype(np.float32)}
    if rng.random() < 0.7:
        arrays["B"] = (rng.standard_normal((D, 2 * G * H)) * 0.5).astype(np.float32)
    if rng.random() < 0.6:
        lens = rng.integers(0, T + 1, Bn).astype(np.int32)
        lens[0] = T
        if Bn > 2:
            lens[1] = 0
        arrays["sequence_lens"] = lens
    if rng.random() < 0.6:
        arrays["initial_h"] = rng.standard_normal((D, Bn, H)).astype(np.float32)
    if op == "LSTM":
        if rng.random() < 0.6:
            arrays["initial_c"] = rng.standard_normal((D, Bn, H)).astype(np.float32)
        if rng.random() < 0.5:
            arrays["P"] = (rng.standard_normal((D, 3 * H)) * 0.5).astype(np.float32)
    attrs = {"hidden_size": H, "direction": direction}
    if rng.random() < 0.3:
        attrs["clip"] = float(rng.uniform(0.5, 3.0))
    if op == "LSTM" and rng.random() < 0.3:
        attrs["input_forget"] = 1
    if op == "GRU" and rng.random() < 0.5:
        attrs["linear_before_reset"] = 1
    if rng.random() < 0.4:
        # Gate activations stay bounded so that 50 steps cannot overflow; the
        # other positions take any activation.
        gate_acts = {"LSTM": ["Sigmoid", "HardSigmoid", "Tanh", "Softsign", "ScaledTanh"],
                     "GRU": ["Sigmoid", "HardSigmoid"], "RNN": ACT_NAMES}[op]
        names = []
        for _ in range(D):
            names.append(str(rng.choice(gate_acts)))
            names += [str(a) for a in rng.choice(ACT_NAMES, N_ACTS[op] - 1)]
        attrs["activations"] = names
        if rng.random() < 0.7:
            attrs["activation_alpha"] = [float(v) for v in rng.uniform(0.1, 0.9, 6)]
            attrs["activation_beta"] = [float(v) for v in rng.uniform(0.1, 0.9, 6)]
    initializers = [n for n in ("W", "R", "B", "P") if n in arrays and rng.random() < 0.7]
    outs = SPEC_OUTPUTS[op]
    outputs = [o for o in outs if rng.random() < 0.7] or [outs[0]]
    layout = 1 if rng.random() < 0.15 else 0
    return arrays, attrs, initializers, outputs, layout


def to_layout1(arrays):
    a = dict(arrays)
    a["X"] = np.ascontiguousarray(a["X"].transpose(1, 0, 2))
    for k in ("initial_h", "initial_c"):
        if k in a:
            a[k] = np.ascontiguousarray(a[k].transpose(1, 0, 2))
    return a


SEEDS = range(40)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("seed", SEEDS)
def test_random_case(op, seed):
    arrays, attrs, initializers, outputs, layout = make_case(op, seed * 7 + len(op))
    if layout == 1:
        arrays = to_layout1(arrays)
        attrs = dict(attrs, layout=1)
    model = recurrent_model(op, arrays, attrs, initializers=initializers, outputs=outputs)
    feed = feeds(model, arrays)
    got = fastlstm.InferenceSession(model.SerializeToString()).run(None, feed)
    if layout == 0:
        expected = run_ort(model, feed)
    else:
        full = getattr(ref, op.lower())(*[arrays.get(n) for n in
                                          ["X", "W", "R", "B", "sequence_lens", "initial_h",
                                           "initial_c", "P"][:8 if op == "LSTM" else 6]],
                                        **attrs)
        expected = [full[SPEC_OUTPUTS[op].index(o)] for o in outputs]
    assert len(got) == len(expected)
    for name, g, e in zip(outputs, got, expected):
        assert g.shape == e.shape, name
        assert g.dtype == np.float32
        assert_close(g, e, label=f"{op} seed={seed} {name} attrs={attrs}")


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_bidirectional_distinct_states_and_lengths(op):
    """Both directions with their own weights, peepholes and initial states."""
    rng = np.random.default_rng(11)
    T, Bn, I, H = 9, 5, 6, 20
    G = GATES[op]
    arrays = {"X": rng.standard_normal((T, Bn, I)).astype(np.float32),
              "W": (rng.standard_normal((2, G * H, I)) * 0.3).astype(np.float32),
              "R": (rng.standard_normal((2, G * H, H)) * 0.3).astype(np.float32),
              "B": (rng.standard_normal((2, 2 * G * H)) * 0.3).astype(np.float32),
              "sequence_lens": np.array([9, 0, 4, 1, 9], np.int32),
              "initial_h": rng.standard_normal((2, Bn, H)).astype(np.float32)}
    if op == "LSTM":
        arrays["initial_c"] = rng.standard_normal((2, Bn, H)).astype(np.float32)
        arrays["P"] = rng.standard_normal((2, 3 * H)).astype(np.float32)
    model = recurrent_model(op, arrays, {"hidden_size": H, "direction": "bidirectional"},
                            initializers=["W", "R", "B"])
    feed = feeds(model, arrays)
    got = fastlstm.InferenceSession(model.SerializeToString()).run(None, feed)
    for g, e in zip(got, run_ort(model, feed)):
        assert_close(g, e)
    # reverse direction of a row of length 4 starts from its step 3, not step 8
    Y = got[0]
    assert np.all(Y[4:, :, 2] == 0) and np.all(Y[:, :, 1] == 0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_empty_time_or_batch(op, threads):
    """T=0 and B=0 give empty or zero outputs, never a crash.  There is no
    onnxruntime answer to compare with: 1.32 aborts the process on B=0 and on
    T=0 for GRU and RNN, and returns uninitialized memory as LSTM's Y_h for T=0."""
    rng = np.random.default_rng(1)
    arrays = random_weights(rng, op, 2, 5, 3)
    arrays["X"] = np.zeros((4, 2, 3), np.float32)
    model = recurrent_model(op, arrays, {"hidden_size": 5, "direction": "bidirectional"},
                            initializers=["W", "R", "B"], symbolic=True)
    so = fastlstm.SessionOptions()
    so.intra_op_num_threads = threads
    s = fastlstm.InferenceSession(model.SerializeToString(), so)
    x = np.zeros((0, 2, 3), np.float32)
    out = s.run(None, {"X": x})
    assert [o.shape for o in out][:2] == [(0, 2, 2, 5), (2, 2, 5)]
    assert not any(np.any(o) for o in out)
    out = s.run(None, {"X": np.zeros((4, 0, 3), np.float32)})
    assert [o.shape for o in out][:2] == [(4, 2, 0, 5), (2, 0, 5)]
