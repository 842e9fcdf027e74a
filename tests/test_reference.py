"""The numpy reference in tests/reference.py, checked against onnx.reference.

onnx.reference implements the default attributes (it ignores activations,
clip and input_forget), including layout=1; test_vs_onnxruntime.py covers the
rest against onnxruntime.  This file keeps the reference honest where it is the
oracle (layout=1, which onnxruntime refuses).
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
