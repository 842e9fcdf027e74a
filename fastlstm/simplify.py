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
  Y, so the Reshape after it is a free view.
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


def simplify(graph):
    """All passes, in order."""
    return fuse_y_transpose(drop_dead(drop_zero_states(fold_constants(graph))))
