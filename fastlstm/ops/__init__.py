"""Execution of ir nodes: one runner per node, built once at load.

A runner is created from its node and the graph's constants (packing what it
can right away) and is then called with the dict of values computed so far;
it returns the node's outputs in order (None for outputs nobody asked for).
"""
from .basic import GlueRunner
from .glue import OPS as GLUE_OPS
from .recurrent import RecurrentRunner

RUNNERS = {name: GlueRunner for name in GLUE_OPS}
RUNNERS.update({"LSTM": RecurrentRunner, "GRU": RecurrentRunner, "RNN": RecurrentRunner})
