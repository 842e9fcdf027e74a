"""Builders for the ops around recurrent nodes: Constant, and every op of
``fastlstm.ops.glue`` (attributes and input/output counts checked at import)."""
import numpy as np

from ..errors import InvalidModel, UnsupportedOp
from ..ops.glue import OPS
from .registry import register


def _glue_builder(spec):
    def build(node, ctx):
        for key in node.attrs:
            if key not in spec.attrs:
                raise UnsupportedOp(f"{node.describe()}: attribute '{key}' is not supported",
                                    node.op_type, node.domain, node.since_version, node.name)
        lo, hi = spec.inputs
        ctx.require_inputs(node, lo, hi)
        n_out = len(node.outputs)
        if not spec.outputs[0] <= n_out <= spec.outputs[1]:
            raise InvalidModel(f"{node.describe()} has {n_out} outputs; {node.op_type} has "
                               f"{spec.outputs[0]} to {spec.outputs[1]}")
        return node
    return build


for _name, _spec in OPS.items():
    register(_name, _spec.versions)(_glue_builder(_spec))


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
