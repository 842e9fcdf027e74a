"""Execution of ir nodes: the op table and one runner per node, built at load.

Ops are declared in ``table`` by the files of each family (elementwise,
shape, reduce, linear, conv, norm, control); recurrent layers have their own
runner.  A runner is created from its node and the graph's constants (packing
what it can right away) and is then called with the dict of values computed
so far; it returns the node's outputs in order.
"""
from . import control, elementwise, linear, reduce, shape  # noqa: F401  (declare the ops)
from .basic import GlueRunner
from .recurrent import RecurrentRunner
from .recurrent_ops import RECURRENT_OPS
from .table import OPS

for _family in ("conv", "norm", "quantized"):
    try:
        __import__(f"{__name__}.{_family}")
    except ModuleNotFoundError as e:  # a family still being written
        if e.name != f"{__name__}.{_family}":
            raise

RUNNERS = {name: (d.runner or GlueRunner) for name, d in OPS.items()}
RUNNERS.update({op: RecurrentRunner for op in RECURRENT_OPS})
