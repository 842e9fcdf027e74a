"""The default runner of a table op: call the form's function."""
import numpy as np

from ..errors import FastLSTMError, InvalidInput
from .table import form_of


class GlueRunner:
    """Calls an op's numpy function; numpy's own errors become InvalidInput
    naming the node."""

    def __init__(self, node, constants, needed, env):
        self.node = node
        self.fn = form_of(node).fn
        self.n_out = len(node.outputs)

    def __call__(self, values, ctx=None):
        ins = [values[i] if i else None for i in self.node.inputs]
        try:
            return self.fn(self.node, ins, self.n_out)
        except FastLSTMError:
            raise
        except (ValueError, IndexError, TypeError, np.exceptions.AxisError) as e:
            raise InvalidInput(f"{self.node.describe()}: {e}") from None
