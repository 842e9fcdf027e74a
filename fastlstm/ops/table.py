"""The op table: everything about a non-recurrent op, declared once beside its code.

An op is declared by decorating the function that computes one *form* of it::

    @op("Squeeze", since=13, inputs=(1, 2), shape_params=(1,), zero_preserving=True)
    def squeeze_13(node, ins, n_out):
        ...                       # -> list of n_out arrays

A form covers the op's ONNX versions from ``since`` up to the next form
declared for the same op (Squeeze 1 takes ``axes`` as an attribute, Squeeze 13
as an input).  Which ONNX versions exist comes from the ONNX schemas at import;
a model whose opset selects a version no form covers is refused by name.

Per form:
  attrs          the attributes it accepts (others are refused at import);
  inputs/outputs (min, max) counts;
  shape_params   input positions whose *values* set the output's shape (a
                 Reshape target, Slice bounds): the executor must know them to
                 cache shape arithmetic and to specialise a run.
Per op (the same on every form):
  zero_preserving  all-zero data input (input 0) gives all-zero output (it only
                   moves, selects or replicates elements); lets import see that
                   an exporter's initial state is zeros;
  foldable         computed at import when all its inputs are constants;
  runner           a class built once per node at load (packing weights, say);
                   default: call the form's function;
  scalar           for elementwise float ops, the per-element expression, a
                   format string over the inputs ``{0}``, ``{1}``, ... and the
                   node's attributes ``{alpha}`` ...: the executor fuses chains
                   of such ops into one compiled loop (see ``fastlstm.fuse``);
                   or a function ``(node, input expressions) -> expression or
                   None`` where the forms differ (Clip);
  bind           optional ``bind(node, consts, rec) -> callable(*ins) or None``:
                 for one input signature (``rec``: a recorded run's values,
                 ``consts``: the constants), a faster form of the op that
                 returns its output (a tuple of them for several outputs);
                 used by the specialised executor.  A bind that is one
                 Python expression says so with ``inline(fn, expr, **values)``:
                 the executor then writes ``expr`` (over the inputs ``{0}``..
                 and the named values) in place of a call (a slice with a
                 precomputed index, say: a call cost ~0.5 us more).
  moves          each output element is a copy of an element of input 0,
                 chosen by the attributes and the other inputs (Gather,
                 Tile, Expand, ...): with those inputs constant the executor
                 precomputes the map and runs one ``take`` (Pad has a bind
                 instead: a few slice copies read no index map).

``fastlstm ops`` and the README's op list are generated from this table.
"""
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Tuple

#: op name -> OpDecl
OPS = {}


@dataclass(frozen=True)
class Form:
    since: int
    fn: Callable
    attrs: frozenset
    inputs: Tuple[int, int]
    outputs: Tuple[int, int]
    shape_params: Tuple[int, ...]


@dataclass(frozen=True)
class OpDecl:
    name: str
    family: str
    forms: Tuple[Form, ...] = ()
    zero_preserving: bool = False
    foldable: bool = True
    runner: Optional[type] = None
    scalar: Optional[object] = None     # str, or callable (see above)
    scalar_attrs: Tuple[Tuple[str, float], ...] = ()
    bind: Optional[Callable] = None
    moves: bool = False
    doc: str = field(default="", compare=False)

    def form(self, since_version):
        """The form that computes ONNX version ``since_version``, or None."""
        chosen = None
        for f in self.forms:
            if f.since <= since_version:
                chosen = f
        return chosen

    @property
    def first_version(self):
        return self.forms[0].since


def op(name, since=1, attrs=(), inputs=(1, 1), outputs=(1, 1), shape_params=(),
       **per_op):
    """Declare one form of op ``name``; see the module docstring."""
    def deco(fn):
        family = fn.__module__.rsplit(".", 1)[-1]
        form = Form(since, fn, frozenset(attrs), tuple(inputs), tuple(outputs),
                    tuple(shape_params))
        old = OPS.get(name)
        if old is None:
            doc = (fn.__doc__ or "").strip().split("\n")[0]
            decl = OpDecl(name, family, (form,), doc=doc, **per_op)
        else:
            for k, v in per_op.items():
                if getattr(old, k) != v and getattr(old, k) != OpDecl.__dataclass_fields__[k].default:
                    raise AssertionError(f"{name}: '{k}' declared differently on two forms")
            forms = tuple(sorted(old.forms + (form,), key=lambda f: f.since))
            decl = replace(old, forms=forms, **per_op)
        OPS[name] = decl
        return fn
    return deco


def inline(fn, expr, **values):
    """Mark bind result ``fn`` as the expression ``expr`` (see ``bind`` above)."""
    fn.inline = (expr, values)
    return fn


def form_of(node):
    """The Form that runs ``node`` (chosen by its since_version)."""
    from ..errors import InvalidModel
    decl = OPS.get(node.op_type)
    f = None if decl is None else decl.form(node.since_version)
    if f is None:
        raise InvalidModel(f"{node.describe()}: no implementation of this op version")
    return f


def attr(node, name, default=None):
    """A node attribute, or ``default`` when the node does not set it."""
    return node.attrs.get(name, default)


def ops_by_family():
    """{family: [op names]} for docs and ``fastlstm ops``."""
    out = {}
    for name, d in sorted(OPS.items()):
        out.setdefault(d.family, []).append(name)
    return out


#: Families in the order the docs list them (the file each lives in).
FAMILY_TITLES = {
    "elementwise": "Elementwise", "shape": "Shape and indexing", "reduce": "Reductions",
    "linear": "Matrix products", "conv": "Convolution and pooling",
    "norm": "Normalisation", "control": "Control flow",
    "quantized": "Quantized, onnxruntime's scheme (DynamicQuantizeLSTM, DynamicQuantizeMatMul "
                 "and MatMulIntegerToFloat in domain com.microsoft)",
}


def op_list_markdown():
    """The README's op list (between its ``<!-- ops -->`` markers), from the table."""
    fams = ops_by_family()
    lines = []
    for fam, title in FAMILY_TITLES.items():
        if fam in fams:
            lines.append(f"- {title} (`fastlstm/ops/{fam}.py`): " + ", ".join(fams[fam]) + ".")
    for fam in sorted(set(fams) - set(FAMILY_TITLES)):
        lines.append(f"- {fam} (`fastlstm/ops/{fam}.py`): " + ", ".join(fams[fam]) + ".")
    lines.append("- Recurrent (`fastlstm/ops/recurrent.py`): GRU, LSTM, RNN.")
    return "\n".join(lines)
