"""Builders for the table ops (``fastlstm.ops.table``) and Constant.

Each table op is registered for every ONNX version of it that one of its
declared forms covers (the versions come from the ONNX schemas); the builder
checks attributes and input/output counts against the chosen form.
"""
import numpy as np

from ..errors import InvalidModel, UnsupportedOp
from ..ops import table
from .registry import MAX_OPSET, register, set_table_loader


def _onnx_versions(name):
    """Every since_version of ONNX op ``name`` up to MAX_OPSET."""
    import onnx.defs
    out = set()
    for v in range(1, MAX_OPSET + 1):
        try:
            out.add(onnx.defs.get_schema(name, v, "").since_version)
        except onnx.defs.SchemaError:
            pass
    return sorted(out)


def _builder(decl):
    def build(node, ctx):
        form = decl.form(node.since_version)
        if form is None:    # (registered versions are covered; kept as a guard)
            raise UnsupportedOp(f"{node.describe()}: version {node.since_version} is not "
                                f"implemented", node.op_type, node.domain,
                                node.since_version, node.name)
        for key in node.attrs:
            if key not in form.attrs:
                raise UnsupportedOp(f"{node.describe()}: attribute '{key}' is not supported",
                                    node.op_type, node.domain, node.since_version, node.name)
        lo, hi = form.inputs
        ctx.require_inputs(node, lo, hi)
        n_out = len(node.outputs)
        if not form.outputs[0] <= n_out <= form.outputs[1]:
            raise InvalidModel(f"{node.describe()} has {n_out} outputs; {node.op_type} has "
                               f"{form.outputs[0]} to {form.outputs[1]}")
        build_fn = getattr(form.fn, "build", None)
        if build_fn is not None:    # op-specific validation and rewriting at import
            return build_fn(node, ctx)
        return node
    return build


def register_table():
    """Register every table op (called on the first lookup: it reads the ONNX
    schemas, and a .fastlstm file loads without the onnx package)."""
    for name, decl in table.OPS.items():
        versions = [v for v in _onnx_versions(name) if v >= decl.first_version]
        if versions:
            register(name, versions)(_builder(decl))


set_table_loader(register_table)


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
