"""Execution of ir nodes: the op table and one runner per node, built at load.

Ops are declared in ``table`` by the files of each family (elementwise,
shape, reduce, linear, conv, norm, control, quantized); recurrent layers have their own
runner.  A runner is created from its node and the graph's constants (packing
what it can right away) and is then called with the dict of values computed
so far; it returns the node's outputs in order.
"""
from . import (control, conv, elementwise, linear, norm, quantized,  # noqa: F401
               reduce, shape)        # (importing a family declares its ops)
from .basic import GlueRunner
from .recurrent import RecurrentRunner
from .recurrent_ops import RECURRENT_OPS
from .table import OPS

RUNNERS = {name: (d.runner or GlueRunner) for name, d in OPS.items()}
RUNNERS.update({op: RecurrentRunner for op in RECURRENT_OPS})
