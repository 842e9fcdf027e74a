"""The numpy reference in tests/reference.py, checked against onnx.reference.

onnx.reference implements the default attributes (it ignores activations,
clip and input_forget), including layout=1; onnxruntime runs every layout-0
case (test_reference_matches_onnxruntime_on_layout0).  This file keeps the
reference honest where it is the oracle (layout=1, which onnxruntime refuses).
"""
import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import reference as ref
from helpers import (SPEC_INPUTS, SPEC_OUTPUTS, feeds, random_inputs, random_weights,
                     recurrent_model)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_reference_matches_onnx_reference(op, direction, layout):
    rng = np.random.default_rng(3)
    D = 2 if direction == "bidirectional" else 1
    T, B, I, H = 4, 3, 5, 6
    arrays = random_weights(rng, op, D, H, I, peepholes=(op == "LSTM"))
    random_inputs(rng, op, arrays, (T, B, I), (D, B, H))
    if layout == 1:
        for k in ("X", "initial_h", "initial_c"):
            if k in arrays:
                arrays[k] = np.ascontiguousarray(arrays[k].transpose(1, 0, 2))
    expected = getattr(ref, op.lower())(*[arrays.get(n) for n in SPEC_INPUTS[op]],
                                        hidden_size=H, direction=direction, layout=layout)
    model = recurrent_model(op, arrays, {"hidden_size": H, "direction": direction,
                                         "layout": layout})
    got = ReferenceEvaluator(model).run(None, feeds(model, arrays))
    for name, g, e in zip(SPEC_OUTPUTS[op], got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_fastlstm_layout1_matches_onnx_reference(op, direction):
    """onnxruntime refuses layout=1; here fastlstm meets onnx.reference directly."""
    import fastlstm
    rng = np.random.default_rng(8)
    D = 2 if direction == "bidirectional" else 1
    B, T, I, H = 3, 6, 5, 19
    arrays = random_weights(rng, op, D, H, I, peepholes=(op == "LSTM"))
    random_inputs(rng, op, arrays, (B, T, I), (B, D, H))
    model = recurrent_model(op, arrays, {"hidden_size": H, "direction": direction,
                                         "layout": 1})
    feed = feeds(model, arrays)
    expected = ReferenceEvaluator(model).run(None, feed)
    got = fastlstm.InferenceSession(model.SerializeToString()).run(None, feed)
    for name, g, e in zip(SPEC_OUTPUTS[op], got, expected):
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-4, err_msg=name)


#: Everything tests/reference.py implements beyond onnx.reference's defaults:
#: name -> (attributes, whether to feed sequence_lens).
FEATURES = {
    "defaults": ({}, False),
    "clip": ({"clip": 0.8}, False),
    "flag": ({"input_forget": 1, "linear_before_reset": 1}, False),
    "activations": ({"activations": "all"}, False),
    "sequence_lens": ({}, True),
    "everything": ({"clip": 1.5, "input_forget": 1, "linear_before_reset": 1,
                    "activations": "all"}, True),
}
_ACTS = {"LSTM": ["HardSigmoid", "LeakyRelu", "ScaledTanh"], "GRU": ["Softsign", "Affine"],
         "RNN": ["ThresholdedRelu"]}


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_reference_matches_onnxruntime_on_layout0(op, direction, feature):
    """onnxruntime runs every layout-0 case the numpy reference covers; there the
    reference must agree with it, which is what makes it a fair oracle for the
    layout-1 cases onnxruntime refuses (peepholes and initial states always
    given; activations with alpha/beta; lengths including 0 and T)."""
    from helpers import run_ort
    attrs, with_lens = FEATURES[feature]
    attrs = dict(attrs)
    if op != "LSTM":
        attrs.pop("input_forget", None)
    if op != "GRU":
        attrs.pop("linear_before_reset", None)
    D = 2 if direction == "bidirectional" else 1
    if attrs.get("activations") == "all":
        attrs["activations"] = _ACTS[op] * D
        attrs["activation_alpha"] = [0.3, 0.6, 0.9, 0.2, 0.5, 0.7][:len(attrs["activations"])]
        attrs["activation_beta"] = [0.4, 0.8, 0.1, 0.6][:len(attrs["activations"])]
    rng = np.random.default_rng(11)
    T, B, I, H = 5, 4, 3, 7
    arrays = random_weights(rng, op, D, H, I, peepholes=(op == "LSTM"))
    random_inputs(rng, op, arrays, (T, B, I), (D, B, H))
    arrays["X"] *= 2        # so that clip bites
    if with_lens:
        arrays["sequence_lens"] = np.array([T, 0, 2, 1], np.int32)
    expected = getattr(ref, op.lower())(*[arrays.get(n) for n in SPEC_INPUTS[op]],
                                        hidden_size=H, direction=direction, **attrs)
    model = recurrent_model(op, arrays, dict(attrs, hidden_size=H, direction=direction))
    got = run_ort(model, feeds(model, arrays))
    for name, g, e in zip(SPEC_OUTPUTS[op], got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-4, err_msg=name)
