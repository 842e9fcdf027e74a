"""Import-time simplification of a graph, before packing.

- constant folding: a glue op whose inputs are all constants is computed once
  and replaced by its result;
- zero initial states: exporters build all-zero initial_h / initial_c from the
  batch size at run time (Shape -> Gather -> Unsqueeze -> Concat ->
  ConstantOfShape); zeros are what a recurrent node assumes when the input is
  absent, so the input is dropped and with it the shape sub-graph;
- dead nodes (whose outputs nothing reads) are removed;
- the Transpose that follows a recurrent node's Y to put batch before
  direction ([T, D, B, H] -> [T, B, D, H]) is folded into how the kernels write
  Y, so the Reshape after it is a free view;
- an If whose condition is a constant is replaced by the nodes of the branch
  it takes (repeated with folding until no such If is left);
- Identity nodes are dropped (their readers read the source), except where
  they produce a graph output.
"""
from dataclasses import replace

import numpy as np

from .ops.table import OPS



def fold_constants(graph):
    consts = dict(graph.initializers)
    nodes = []
    for n in graph.nodes:
        decl = OPS.get(n.op_type)
        if decl is not None and decl.foldable and all(not i or i in consts for i in n.inputs):
            outs = decl.form(n.since_version).fn(n, [consts[i] if i else None for i in n.inputs],
                                                 len(n.outputs))
            for name, v in zip(n.outputs, outs):
                if name:
                    consts[name] = np.asarray(v)
            continue
        nodes.append(n)
    return replace(graph, nodes=nodes, initializers=consts)


def _is_zero_const_of_shape(node):
    if node.op_type != "ConstantOfShape":
        return False
    v = node.attrs.get("value")
    return v is None or (np.asarray(v).size == 1 and float(np.asarray(v).reshape(-1)[0]) == 0.0)




def _zero_tensors(graph):
    """Names of tensors known to be all zeros whatever the inputs."""
    zero = {k for k, v in graph.initializers.items() if v.dtype.kind == "f" and not np.any(v)}
    for n in graph.nodes:
        if _is_zero_const_of_shape(n) or \
                (n.op_type in OPS and OPS[n.op_type].zero_preserving and n.inputs and n.inputs[0] in zero) or \
                (n.op_type == "Concat" and all(i in zero for i in n.inputs)):
            zero.update(o for o in n.outputs if o)
    return zero


def drop_zero_states(graph):
    zero = _zero_tensors(graph)
    outputs = {o.name for o in graph.outputs}
    nodes = []
    for n in graph.nodes:
        if n.layer is not None:
            inputs = list(n.inputs)
            for pos in n.layer.desc.state_inputs:
                name = inputs[pos] if pos < len(inputs) else ""
                if name and name in zero and name not in outputs:
                    inputs[pos] = ""
            while inputs and not inputs[-1]:
                inputs.pop()
            n = replace(n, inputs=tuple(inputs))
        nodes.append(n)
    return replace(graph, nodes=nodes)


def drop_dead(graph):
    needed = {o.name for o in graph.outputs}
    keep = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs if o):
            keep.append(n)
            needed.update(i for i in n.inputs if i)
    keep.reverse()
    return replace(graph, nodes=keep,
                   initializers={k: v for k, v in graph.initializers.items()
                                 if k in needed})


def fuse_y_transpose(graph):
    """Recurrent node (layout 0) -> Transpose(perm 0,2,1,3) of its Y: have the
    kernels write Y as [T, B, D, H] and drop the Transpose.  Exporters put it
    after every bidirectional layer, before merging the directions."""
    consumers = {}
    for n in graph.nodes:
        for i in n.inputs:
            if i:
                consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.outputs}
    drop = set()
    nodes = []
    for n in graph.nodes:
        if n.layer is not None and n.layer.spec.layout == 0 and n.outputs and n.outputs[0]:
            y = n.outputs[0]
            users = consumers.get(y, [])
            if len(users) == 1 and y not in outputs:
                t = users[0]
                perm = t.attrs.get("perm")
                if t.op_type == "Transpose" and perm is not None and list(perm) == [0, 2, 1, 3]:
                    outs = (t.outputs[0],) + tuple(n.outputs[1:])
                    n = replace(n, outputs=outs, layer=replace(n.layer, y_tbdh=True))
                    drop.add(id(t))
        if id(n) not in drop:
            nodes.append(n)
    return replace(graph, nodes=[n for n in nodes if id(n) not in drop])


def _defined_names(graph):
    names = {vi.name for vi in graph.inputs} | set(graph.initializers)
    for n in graph.nodes:
        names.update(o for o in n.outputs if o)
    return names


def rename_values(graph, mapping):
    """``graph`` with value names replaced by ``mapping`` everywhere, subgraphs
    (their outer-scope reads) included."""
    if not mapping:
        return graph

    def node(n):
        attrs = n.attrs
        if any(hasattr(v, "nodes") for v in attrs.values()):
            attrs = {k: rename_values(v, mapping) if hasattr(v, "nodes") else v
                     for k, v in attrs.items()}
        return replace(n, inputs=tuple(mapping.get(i, i) for i in n.inputs),
                       outputs=tuple(mapping.get(o, o) for o in n.outputs), attrs=attrs)

    return replace(
        graph, nodes=[node(n) for n in graph.nodes],
        initializers={mapping.get(k, k): v for k, v in graph.initializers.items()},
        inputs=[replace(v, name=mapping.get(v.name, v.name)) for v in graph.inputs],
        outputs=[replace(v, name=mapping.get(v.name, v.name)) for v in graph.outputs],
        captures=tuple(mapping.get(c, c) for c in graph.captures))


def inline_constant_ifs(graph):
    """Splice in the branch of every If whose condition is a constant.

    Returns (graph, whether anything changed).  Names the branch defines that
    clash with the enclosing graph's are renamed."""
    from .ir import Node
    from .ops.control import condition
    consts = graph.initializers
    if not any(n.op_type == "If" and n.inputs[0] in consts for n in graph.nodes):
        return graph, False
    taken = _defined_names(graph)
    inits = dict(consts)
    nodes = []
    for n in graph.nodes:
        if n.op_type != "If" or n.inputs[0] not in consts:
            nodes.append(n)
            continue
        branch = condition(n, consts[n.inputs[0]])
        mapping = {}
        for name in _defined_names(branch):
            new, k = name, 0
            while new in taken:
                k += 1
                new = f"{name}~{k}"
            taken.add(new)
            if new != name:
                mapping[name] = new
        branch = rename_values(branch, mapping)
        inits.update(branch.initializers)
        nodes.extend(branch.nodes)
        for out, vi in zip(n.outputs, branch.outputs):
            if out:
                nodes.append(Node("Identity", f"{n.name}/{out}", (vi.name,), (out,), {}, "", 1))
    return replace(graph, nodes=nodes, initializers=inits), True


def drop_identities(graph):
    """Readers of an Identity's output read its input instead (kept where the
    output is a graph output)."""
    outputs = {o.name for o in graph.outputs}
    alias = {}
    nodes = []
    for n in graph.nodes:
        if n.op_type == "Identity" and n.outputs[0] not in outputs:
            alias[n.outputs[0]] = alias.get(n.inputs[0], n.inputs[0])
            continue
        nodes.append(n)
    if not alias:
        return graph
    g = replace(graph, nodes=nodes)
    # only reads are renamed: the aliased names are no longer defined anywhere
    return rename_values(g, alias)


def fold(graph):
    """Fold constants and splice constant Ifs until neither changes the graph."""
    graph = fold_constants(graph)
    changed = True
    while changed:
        graph, changed = inline_constant_ifs(graph)
        if changed:
            graph = fold_constants(graph)
    return graph


def simplify_subgraph(graph):
    """The passes that are valid inside a branch or loop body."""
    return drop_dead(drop_identities(fold(graph)))


def simplify(graph):
    """All passes, in order."""
    graph = drop_dead(drop_zero_states(drop_identities(fold(graph))))
    return fuse_y_transpose(graph)
