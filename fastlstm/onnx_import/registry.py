"""Op builders, versioned by opset.

A builder validates one node at import (attributes, which inputs may be absent)
and records what execution needs in ``node.attrs``.  A node whose op, domain or
opset version has no builder is refused with :class:`UnsupportedOp` naming all
three and the node.
"""
from ..errors import UnsupportedOp

#: (domain, op_type) -> sorted list of (since_version, builder)
_BUILDERS = {}

#: Lowest and highest default-domain opset this importer accepts.
MIN_OPSET = 7
MAX_OPSET = 25


def register(op_type, since_versions, domain=""):
    """Decorator: ``builder(node, ctx)`` handles ``op_type`` for these op versions.

    ``since_versions`` are the ONNX versions of the op that the builder
    implements (``onnx.defs.get_schema(op, v).since_version``).  The newest one
    not above the model's opset is chosen, as ONNX defines.
    """
    def deco(fn):
        entries = _BUILDERS.setdefault((domain, op_type), [])
        entries.extend((v, fn) for v in since_versions)
        entries.sort(key=lambda e: e[0])
        return fn
    return deco


_table_loader = []


def set_table_loader(fn):
    """``fn()`` registers the table ops; run once, before the first lookup."""
    _table_loader.append(fn)


def _load_table():
    while _table_loader:
        _table_loader.pop()()


def resolve(op_type, domain, opset, node_name):
    """(since_version, builder) for an op at a model opset, or raise UnsupportedOp."""
    _load_table()
    dom = domain or ""
    where = f'node "{node_name}"'
    shown = f"{dom}::{op_type}" if dom else op_type
    if dom not in ("", "ai.onnx"):
        # Other domains: only the ops registered for them (com.microsoft's
        # quantized ops, fastlstm.ops.quantized), each at its newest version.
        entries = _BUILDERS.get((dom, op_type))
        if entries:
            return entries[-1]
        known = sorted(op for d, op in _BUILDERS if d == dom)
        raise UnsupportedOp(f"{shown} (domain '{dom}', opset {opset}) at {where} is not "
                            f"supported: fastlstm runs the default ONNX domain"
                            + (f" and, of '{dom}', {', '.join(known)}" if known else ""),
                            op_type, dom, opset, node_name)
    entries = _BUILDERS.get(("", op_type))
    if not entries:
        raise UnsupportedOp(f"{op_type} (opset {opset}) at {where} is not supported; "
                            f"supported ops: {', '.join(supported_ops())}",
                            op_type, dom, opset, node_name)
    chosen = None
    for since, fn in entries:
        if since <= opset:
            chosen = (since, fn)
    if chosen is None:
        raise UnsupportedOp(f"{op_type} at {where} needs opset >= {entries[0][0]}; the model "
                            f"imports opset {opset}", op_type, dom, opset, node_name)
    return chosen


def supported_ops():
    """Sorted names of the ops fastlstm can run (default domain)."""
    from ..ops.table import OPS
    return sorted({op for dom, op in _BUILDERS if dom == ""} | set(OPS))
