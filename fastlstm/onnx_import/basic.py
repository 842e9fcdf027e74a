"""Builders for the ops that carry data around recurrent nodes: Identity, Constant."""
import numpy as np

from ..errors import InvalidModel, UnsupportedOp
from .registry import register


@register("Identity", [1, 13, 14, 16, 19, 21, 23, 24, 25])
def build_identity(node, ctx):
    ctx.require_inputs(node, 1, 1)
    return node


@register("Constant", [1, 9, 11, 12, 13, 19, 21, 23, 24, 25])
def build_constant(node, ctx):
    """Fold a Constant into the initializers; the node itself disappears."""
    a = node.attrs
    if len(a) != 1:
        raise InvalidModel(f"{node.describe()} must have exactly one value attribute, "
                           f"has {sorted(a) or 'none'}")
    (key, value), = a.items()
    if key == "value":
        arr = value
    elif key == "value_float":
        arr = np.array(value, np.float32)
    elif key == "value_floats":
        arr = np.array(value, np.float32)
    elif key == "value_int":
        arr = np.array(value, np.int64)
    elif key == "value_ints":
        arr = np.array(value, np.int64)
    else:
        raise UnsupportedOp(f"{node.describe()}: attribute '{key}' is not supported "
                            f"(only numeric tensors)", node.op_type, node.domain,
                            node.since_version, node.name)
    if not isinstance(arr, np.ndarray):
        raise InvalidModel(f"{node.describe()}: attribute '{key}' is not a tensor")
    ctx.add_constant(node.output(0), arr)
    return None
