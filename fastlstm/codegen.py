"""A plan's run for one input signature as one generated Python function.

The general executor (``fastlstm.plan.Plan.run``) looks every node up,
builds its argument list and stores each output in a dict: about a
microsecond per node.  For a fixed signature (every input shape known, the
shape arithmetic already folded by ``fastlstm.specialize``) the same run is a
list of straight-line statements over local variables:

- reshapes of a known shape (Reshape, Flatten, Squeeze, Unsqueeze) are
  ``x.reshape(shape)``;
- chains of float elementwise ops are one fused loop (``fastlstm.fuse``);
- other table ops call their function directly; recurrent layers, convs and
  other runner-based ops are called through their runners.

``compile_plan`` records one run to learn every value's shape and dtype, then
writes and compiles the function.
"""
import numpy as np

from .errors import InvalidInput
from .ops.basic import GlueRunner
from .ops.table import OPS, form_of
from . import fuse

_VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
_UFUNCS = {"Add": "np.add", "Sub": "np.subtract", "Mul": "np.multiply"}

#: Float unary ops as one numpy call (when not part of a fused chain)
_UNARY = {"Relu": "np.maximum({}, np.float32(0))", "Tanh": "np.tanh({})",
          "Sqrt": "np.sqrt({})", "Exp": "np.exp({})", "Log": "np.log({})",
          "Abs": "np.abs({})", "Neg": "np.negative({})"}

#: Elementwise ops one numpy call computes: alone, they are not worth a
#: compiled loop of their own (the others, Sigmoid say, take several calls).
_CHEAP_ALONE = {"Add", "Sub", "Mul", "Div", "Relu", "Tanh", "Sqrt", "Exp", "Log", "Abs",
                "Neg", "Reciprocal", "Pow", "Cast"}


def _movement_map(n, rec, consts):
    """For an op that only moves elements of input 0 (``moves`` in the table),
    with every other input constant: the flat source index of each output
    element, or None."""
    decl = OPS.get(n.op_type)
    if decl is None or not decl.moves or len(n.outputs) != 1:
        return None
    if any(i and i not in consts for i in n.inputs[1:]):
        return None
    x = rec.get(n.inputs[0])
    out = rec.get(n.outputs[0])
    if x is None or out is None or x.size >= 2 ** 31 or out.size > 1 << 24:
        return None
    idx = np.arange(x.size, dtype=np.int64).reshape(x.shape)
    try:
        got = form_of(n).fn(n, [idx] + [consts[i] if i else None for i in n.inputs[1:]], 1)[0]
    except Exception:
        return None
    got = np.asarray(got)
    if got.dtype != np.int64 or got.shape != out.shape:
        return None
    return np.ascontiguousarray(got)


def _readers(nodes):
    """{value name: indices of the nodes that read it}"""
    readers = {}
    for k, n in enumerate(nodes):
        for i in n.inputs:
            if i:
                readers.setdefault(i, []).append(k)
    return readers


def _fuse_conv_activation(nodes, runners, outputs):
    """Convs whose only reader is a Relu, a Sigmoid, or a Clip with constant
    bounds (as its data input) apply it themselves.

    Returns {activation node index: conv output name} and, per node, the
    runner to call (a fused copy of the conv's, so the general path, which
    still runs the activation node, is left as it was)."""
    readers = _readers(nodes)
    alias = {}
    runners = list(runners)
    for k, (n, r) in enumerate(zip(nodes, runners)):
        make = getattr(r, "fused", None)
        if make is None or not n.outputs or n.outputs[0] in outputs:
            continue
        rs = readers.get(n.outputs[0], [])
        if len(rs) != 1:
            continue
        act = nodes[rs[0]]
        new = None
        if act.op_type in ("Relu", "Sigmoid"):
            new = make(act.op_type)
        elif (act.op_type == "Clip" and act.inputs[0] == n.outputs[0]
              and n.outputs[0] not in act.inputs[1:]
              and hasattr(r, "clip_bounds_from")):
            bounds = r.clip_bounds_from(act)
            if bounds is not None:
                new = make("Clip", bounds)
        if new is not None:
            runners[k] = new
            alias[rs[0]] = n.outputs[0]
    return alias, runners


def _dense_with_bias(nodes, rec, consts, outputs):
    """A MatMul by a constant 2-D float32 matrix whose only reader is an Add
    of a constant bias row (PyTorch's Linear on a 3-D input exports as the
    two): {MatMul index: (Add index, one packed product with the bias)}."""
    from .kernels.dense import Dense
    from .ops.linear import bias_row, dense_weights
    readers = _readers(nodes)
    found = {}
    for k, n in enumerate(nodes):
        if n.op_type != "MatMul" or n.outputs[0] in outputs:
            continue
        w = dense_weights(n, consts, rec)
        rs = readers.get(n.outputs[0], [])
        if w is None or len(rs) != 1 or nodes[rs[0]].op_type != "Add":
            continue
        add = nodes[rs[0]]
        other = [i for i in add.inputs if i != n.outputs[0]]
        if len(other) != 1 or other[0] not in consts:
            continue
        row = bias_row(consts[other[0]], w.shape[1])
        out, y = rec.get(add.outputs[0]), rec.get(n.outputs[0])
        if row is None or not isinstance(out, np.ndarray) or out.shape != y.shape:
            continue
        found[k] = (rs[0], Dense(w, row))
    return found


class _Names:
    def __init__(self):
        self.var = {}
        self.globals = {"np": np, "InvalidInput": InvalidInput}

    def v(self, name):
        if name not in self.var:
            self.var[name] = f"v{len(self.var)}"
        return self.var[name]

    def g(self, value, prefix="g"):
        key = f"{prefix}{len(self.globals)}"
        self.globals[key] = value
        return key


def _pow_expr(node, consts):
    """The scalar template of a Pow whose exponent is a constant, else None."""
    e = consts.get(node.inputs[1])
    if e is None or e.size != 1:
        return None
    e = float(np.asarray(e).reshape(-1)[0])
    if e == 2.0:
        return "square({0})"
    if e == 1.0:
        return "{0}"
    return f"power({{0}}, np.float32({e!r}))"


def _fusable(node, rec, consts):
    """(template, data input names) when ``node`` can join a fused loop."""
    decl = OPS.get(node.op_type)
    if decl is None or decl.scalar is None:
        return None
    out = rec.get(node.outputs[0])
    if out is None or out.dtype != np.float32 or len(node.outputs) != 1:
        return None
    if node.op_type == "Pow":
        tmpl = _pow_expr(node, consts)
        if tmpl is None:
            return None
        ins = [node.inputs[0]]
    else:
        ins = [i for i in node.inputs if i]
        tmpl = fuse.scalar_expr(decl, node, [f"{{{k}}}" for k in range(len(ins))])
        if tmpl is None:
            return None
    for i in ins:
        a = rec.get(i)
        if a is None or a.dtype != np.float32:
            return None
        if a.shape != out.shape and a.size != 1 and i not in consts:
            return None
    return tmpl, ins


def _groups(nodes, rec, consts, outputs):
    """Fused groups: {root index: [node indices in order]} and the set of
    indices folded into a group other than as its root."""
    consumers = {}
    for k, n in enumerate(nodes):
        for i in n.inputs:
            if i:
                consumers[i] = consumers.get(i, 0) + 1
    fusable = {}
    for k, n in enumerate(nodes):
        f = _fusable(n, rec, consts)
        if f is not None:
            fusable[k] = f
    producer = {n.outputs[0]: k for k, n in enumerate(nodes) if k in fusable}
    group_of = {}
    members = {}
    for k in sorted(fusable):
        n = nodes[k]
        mine = [k]
        shape = rec[n.outputs[0]].shape
        for i in fusable[k][1]:
            p = producer.get(i)
            if p is None or consumers.get(i, 0) != 1 or i in outputs:
                continue
            if rec[nodes[p].outputs[0]].shape != shape:
                continue
            root = group_of.get(p, p)
            if root in members:
                mine = members.pop(root) + mine
        for m in mine:
            group_of[m] = k
        members[k] = mine
    groups = {root: sorted(m) for root, m in members.items()
              if len(m) > 1 or nodes[root].op_type not in _CHEAP_ALONE}
    inner = {m for ms in groups.values() for m in ms[:-1]}
    return groups, inner, fusable


def _bind(n, consts, rec):
    decl = OPS.get(n.op_type)
    if decl is None or decl.bind is None:
        return None
    try:
        return decl.bind(n, consts, rec)
    except Exception:
        return None


def _runner_call(N, n, r, outs, rec, consts):
    """A line calling runner ``r`` the general way: a dict of its inputs and ctx."""
    args = ", ".join(f"{i!r}: {N.v(i)}" for i in n.inputs
                     if i and (i in N.var) and (i in rec or i in consts))
    return f"    {', '.join(outs)}, = {N.g(r, 'r')}({{{args}}}, ctx)"


def compile_plan(plan, outputs, feed, optional=frozenset(), run_all=False):
    """A function ``run(feed, ctx) -> list of outputs`` equal to
    ``plan.run(outputs, feed, ctx, optional, run_all)`` for feeds of the same
    signature as ``feed`` (already validated)."""
    rec = {}
    plan.run(outputs, feed, ctx=None, optional=optional, run_all=run_all, record=rec)
    consts = plan.constants
    steps = plan._all if run_all else plan._live(outputs)
    nodes = [plan.graph.nodes[k] for k in steps]
    runners = [plan.runners[k] for k in steps]
    from .specialize import signature_values
    _, static = signature_values(plan.graph)
    N = _Names()
    lines = ["def run(feed, ctx):"]
    for name in plan.input_infos:
        if name in feed:
            lines.append(f"    {N.v(name)} = feed[{name!r}]")
    for name, a in consts.items():
        N.var[name] = N.g(a, "c")
    relu_alias, runners = _fuse_conv_activation(nodes, runners, set(outputs))
    dense = _dense_with_bias(nodes, rec, consts, set(outputs))
    dense_adds = {a for a, _ in dense.values()}
    keep = [k for k in range(len(nodes)) if k not in relu_alias and k not in dense_adds]
    groups, inner, fusable = _groups([nodes[k] for k in keep], rec, consts, set(outputs))
    groups = {keep[k]: [keep[m] for m in ms] for k, ms in groups.items()}
    inner = {keep[k] for k in inner}
    fusable = {keep[k]: f for k, f in fusable.items()}
    for k, (n, r) in enumerate(zip(nodes, runners)):
        if k in inner or k in dense_adds:
            continue
        if k in dense:          # MatMul + bias Add: one product, written to the Add's output
            a, fn = dense[k]
            lines.append(f"    {N.v(nodes[a].outputs[0])} = {N.g(fn, 'b')}({N.v(n.inputs[0])})")
            continue
        if k in relu_alias:
            N.var[n.outputs[0]] = N.v(relu_alias[k])     # the same array: no line
            continue
        outs = [N.v(o) if o else "_" for o in n.outputs]
        if k in groups:
            lines.extend(_emit_group(N, [nodes[m] for m in groups[k]],
                                     [fusable[m] for m in groups[k]], rec, consts))
            continue
        ins = [N.v(i) if i else "None" for i in n.inputs]
        if n.op_type in _VIEW_OPS and n.inputs[0] in static and n.outputs[0] in rec:
            shape = N.g(tuple(rec[n.outputs[0]].shape), "s")
            lines.append(f"    {outs[0]} = {ins[0]}.reshape({shape})")
        elif n.op_type == "Identity":
            N.var[n.outputs[0]] = ins[0]                # the same array: no line
        elif (idx := _movement_map(n, rec, consts)) is not None:
            flat = idx.reshape(-1)
            if (flat.size and n.outputs[0] not in outputs and rec[n.inputs[0]].flags.c_contiguous
                    and np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size))):
                # one run of consecutive elements (a layer's slice of a state
                # input): a view, no copy
                lines.append(f"    {outs[0]} = {ins[0]}.reshape(-1)[{int(flat[0])}:"
                             f"{int(flat[0]) + flat.size}].reshape({N.g(idx.shape, 's')})")
            else:
                lines.append(f"    {outs[0]} = {ins[0]}.reshape(-1).take({N.g(idx, 'm')})")
        elif (b := _bind(n, consts, rec)) is not None:
            if getattr(b, "inline", None) is not None and len(n.outputs) == 1:
                expr, values = b.inline
                names = {k: N.g(v, "x") for k, v in values.items()}
                lines.append(f"    {outs[0]} = {expr.format(*ins, **names)}")
            elif len(n.outputs) == 1:
                lines.append(f"    {outs[0]} = {N.g(b, 'b')}({', '.join(ins)})")
            else:       # a bind of a several-output op returns a tuple
                lines.append(f"    {', '.join(outs)}, = {N.g(b, 'b')}({', '.join(ins)})")
        elif (n.op_type in _UFUNCS and rec.get(n.inputs[0]) is not None
              and rec[n.inputs[0]].dtype == np.float32
              and rec.get(n.inputs[1]) is not None
              and rec[n.inputs[1]].dtype == np.float32):
            lines.append(f"    {outs[0]} = {_UFUNCS[n.op_type]}({ins[0]}, {ins[1]})")
        elif (n.op_type in _UNARY and rec.get(n.inputs[0]) is not None
              and rec[n.inputs[0]].dtype == np.float32):
            lines.append(f"    {outs[0]} = {_UNARY[n.op_type].format(ins[0])}")
        elif (hasattr(r, "kernel_call") and len(n.outputs) == 1 and n.inputs[0] in rec
              and all(not i or i in consts for i in n.inputs[1:])
              and (kc := r.kernel_call(rec[n.inputs[0]])) is not None):
            # the kernel called here (its runner's Python call cost ~1 us);
            # a read-only X (a view of a read-only feed), which the kernels'
            # signatures refuse, goes through the runner, which copies it
            kern, w, geo, shape = kc
            lines.append(f"    {outs[0]} = np.empty({N.g(tuple(shape), 's')}, np.float32)")
            lines.append("    try:")
            lines.append(f"        {N.g(kern, 'k')}({ins[0]}.reshape(-1), {N.g(w, 'w')}, "
                         f"{N.g(geo, 'g')}, {outs[0]}.reshape(-1))")
            lines.append("    except TypeError:")
            lines.append(f"        {outs[0]} = {N.g(r.run1, 'r')}({ins[0]})")
        elif (hasattr(r, "run1") and len(n.outputs) == 1
              and all(not i or i in consts for i in n.inputs[1:])):
            lines.append(f"    {outs[0]} = {N.g(r.run1, 'r')}({ins[0]})")
        elif n.layer is not None and (direct := r.direct()) is not None:
            h0 = n.input(5) if len(n.inputs) > 5 and n.input(5) in rec else ""
            c0 = n.input(6) if len(n.inputs) > 6 and n.input(6) in rec else ""
            args = ", ".join([N.v(n.inputs[0]), N.v(h0) if h0 else "None",
                              N.v(c0) if c0 else "None"])
            lines.append("    if ctx is None:")
            lines.append(f"        {', '.join(outs)}, = {N.g(direct, 'd')}({args})")
            lines.append("    else:")         # a stream: its state comes in ctx
            lines.append("    " + _runner_call(N, n, r, outs, rec, consts))
        elif type(r) is GlueRunner:
            fn = N.g(form_of(n).fn, "f")
            node = N.g(n, "n")
            lines.append(f"    {', '.join(outs)}, = {fn}({node}, [{', '.join(ins)}], "
                         f"{len(n.outputs)})")
        else:
            lines.append(_runner_call(N, n, r, outs, rec, consts))
    lines.append(f"    return [{', '.join(N.v(o) for o in outputs)}]")
    src = "\n".join(lines) + "\n"
    ns = dict(N.globals)
    exec(compile(src, "<fastlstm specialised run>", "exec"), ns)
    fn = ns["run"]
    fn.source = src
    return fn


def _emit_group(N, nodes, fus, rec, consts):
    """Lines that run one fused group (its root's output allocated here)."""
    ext, scalar, cblock, strided = [], set(), [], set()
    local, body = {}, []
    slots = {}
    out = rec[nodes[-1].outputs[0]]
    for n, (tmpl, ins) in zip(nodes, fus):
        args = []
        for i in ins:
            if i in local:
                args.append(local[i])
                continue
            if i not in slots:
                a = rec[i]
                if i in consts and a.size == 1:
                    v = float(np.asarray(a, np.float32).reshape(-1)[0])
                    slots[i] = f"np.float32({v!r})"
                elif i in consts:
                    cblock.append(np.broadcast_to(a, out.shape).reshape(-1))
                    slots[i] = f"c{len(cblock) - 1}"
                else:
                    pos = len(ext)
                    if not isinstance(a, np.ndarray):   # a numpy scalar (numpy's
                        ext.append(f"np.asarray({N.v(i)})")     # result for rank-0 inputs)
                    elif a.flags.c_contiguous or a.size == 1:
                        ext.append(N.v(i) if a.flags.c_contiguous else
                                   f"np.ascontiguousarray({N.v(i)})")
                    else:       # a view of other strides (of the output's shape)
                        ext.append(N.v(i))
                        strided.add(pos)
                    if a.size == 1 and out.size != 1:
                        scalar.add(pos)
                    slots[i] = f"a{pos}"
            args.append(slots[i])
        t = f"t{len(body)}"
        body.append(f"{t} = {tmpl.format(*args)}")
        local[n.outputs[0]] = t
    src = fuse.kernel_source(len(ext), scalar, body[:-1], body[-1].split(" = ", 1)[1],
                             len(cblock), strided, out.ndim)
    kern = N.g(fuse.compile_kernel(src), "k")
    dst = N.v(nodes[-1].outputs[0])
    shape = N.g(tuple(out.shape), "s")
    call = [dst] + ext
    if cblock:
        call.append(N.g(np.ascontiguousarray(np.stack(cblock)), "c"))
    return [f"    {dst} = np.empty({shape}, np.float32)",
            f"    {kern}({', '.join(call)})"]
