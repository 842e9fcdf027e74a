"""pytest-benchmark suite: fastlstm and onnxruntime on the benchmark table.

    pytest benchmarks/ --benchmark-only --benchmark-group-by=param:case

(For ratios measured in separate, alternating processes, use
``python benchmarks/compare.py``; this suite is for tracking over time.)
"""
import pytest

from fastlstm.bench import TABLE, _feed, _session, build_model


@pytest.mark.parametrize("engine", ["fastlstm", "onnxruntime"])
@pytest.mark.parametrize("case", list(TABLE))
def test_bench(benchmark, case, engine):
    op, T, B, I, H, direction, carry = TABLE[case]
    run = _session(engine, build_model(op, I, H, direction, carry), 1)
    feed = _feed(TABLE[case])
    benchmark(run, feed)
