"""The ONNX backend conformance cases for LSTM, GRU and RNN, run through fastlstm.

The cases come from ``onnx.backend.test.case.node`` (the generator of the ONNX
backend test data).  Each runs at its own opset and re-stamped at opsets 7 and
14, to exercise every op version the importer registers (layout=1 cases exist
only from opset 14).
"""
import copy
import warnings

import pytest

import fastlstm
from helpers import assert_close

PREFIXES = ("test_lstm", "test_gru", "test_simple_rnn", "test_rnn")


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case import node
        cases = node.collect_testcases(None)
    seen = {}
    for c in cases:
        if c.name.startswith(PREFIXES) and c.name not in seen:
            seen[c.name] = c
    return [seen[k] for k in sorted(seen)]


CASES = _cases()


def _restamp(model, opset):
    m = copy.deepcopy(model)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    return m


def test_all_expected_cases_are_present():
    names = {c.name for c in CASES}
    for expected in ["test_lstm_defaults", "test_lstm_with_initial_bias",
                     "test_lstm_with_peepholes", "test_lstm_batchwise", "test_gru_defaults",
                     "test_gru_seq_length", "test_gru_with_initial_bias", "test_gru_batchwise",
                     "test_simple_rnn_defaults", "test_simple_rnn_with_initial_bias",
                     "test_simple_rnn_batchwise", "test_rnn_seq_length"]:
        assert expected in names


@pytest.mark.parametrize("opset", [None, 7, 14])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(case, opset):
    model = case.model
    if opset is not None:
        if opset < 14 and any(a.name == "layout" for n in model.graph.node for a in n.attribute):
            pytest.skip("layout attribute exists from opset 14 on")
        model = _restamp(model, opset)
    sess = fastlstm.InferenceSession(model.SerializeToString())
    names = [i.name for i in model.graph.input]
    out_names = [o.name for o in model.graph.output]
    for inputs, expected in case.data_sets:
        got = sess.run(None, dict(zip(names, inputs)))
        for name, g, e in zip(out_names, got, expected):
            assert g.shape == e.shape, name
            assert_close(g, e, atol=case.atol if case.atol else 1e-5,
                         rtol=case.rtol if case.rtol else 1e-4, label=f"{case.name}:{name}")
