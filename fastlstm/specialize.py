"""Runs specialised per input signature: no per-node Python dispatch in the
steady state.

A signature is what a run's feed looks like: each input's shape and dtype,
and the values of the few small integer/bool inputs that If conditions depend
on (Silero VAD's sample rate).  For a signature seen twice, the plan is
specialised once:

1. *record*: the graph runs once on the feed, keeping every value;
2. *substitute*: every tensor whose value is fixed by the signature (shape
   arithmetic: Shape, Size and what is computed from them and from
   constants, see :func:`signature_values`) becomes a constant; If nodes whose
   condition is now constant are spliced in, constants folded, Identity
   dropped; repeated while it changes the graph (a spliced branch may hold
   more shape arithmetic and Ifs);
3. *compile*: the remaining nodes become one generated Python function
   (``fastlstm.codegen``): views taken once, float elementwise chains fused
   into one compiled loop (``fastlstm.fuse``), dense layers and other small
   ops as one kernel call writing a buffer (reused between runs where the
   value does not escape), other ops called directly, recurrent and conv
   layers through their kernels or runners.

Results equal the general path's within float32 rounding: the substituted
values are those the general path computes for every feed of that
signature; a fused loop or a dense layer's folded activation computes
Tanh, Sigmoid and Exp in the recurrent kernels' float32 forms (errors <=
3.4e-7, ``kernels.activations``), and the small products of two computed
matrices sum in their own order.
"""
import threading

import numpy as np

from .errors import FastLSTMError
from .ops.table import OPS

#: Specialised signatures kept per plan (least recently built dropped first).
MAX_SPECIALISATIONS = 32

#: A value of at most this many elements may be part of a signature.
MAX_KEY_ELEMENTS = 16


#: Ops whose outputs depend on input values through a subgraph (a branch, a
#: trip count or condition): never static, never fixed by a signature.  (The
#: walk in ``condition_inputs`` goes through a Loop or Scan into all of its
#: inputs, captures included: its outputs are a function of those alone.)
_CONTROL = ("If", "Loop", "Scan")


def _scopes(graph):
    """Yield every (sub)graph reachable from ``graph``."""
    yield graph
    for n in graph.nodes:
        for v in n.attrs.values():
            if hasattr(v, "nodes"):
                yield from _scopes(v)


def condition_inputs(graph):
    """Graph inputs whose *values* reach an If condition (at any depth), or
    None when such a value is not small integer/bool data (no signature can
    hold it).  Shape and Size stop the walk: they read only shapes, which the
    signature holds."""
    producers = {}
    for g in _scopes(graph):
        for n in g.nodes:
            for o in n.outputs:
                if o:
                    producers[o] = n
    inputs = {vi.name: vi for vi in graph.inputs}
    found, seen = set(), set()
    stack = [n.inputs[0] for g in _scopes(graph) for n in g.nodes if n.op_type == "If"]
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
            continue
        p = producers.get(name)
        if p is None or p.op_type in ("Shape", "Size"):
            continue
        if p.op_type == "If":
            for key in ("then_branch", "else_branch"):
                stack.extend(vi.name for vi in p.attrs[key].outputs)
        stack.extend(i for i in p.inputs if i)
    for name in found:
        vi = inputs[name]
        if vi.dtype is None or vi.dtype.kind not in "biu":
            return None
    return tuple(sorted(found))


def signature_values(graph, key_inputs=()):
    """Names of the tensors whose values are fixed by a signature.

    A tensor is *static* when its shape is: graph inputs are; so is each
    output of a node whose inputs are static and whose shape-setting inputs
    (``shape_params``) are fixed values.  Fixed values: constants, the key
    inputs, Shape/Size of a static tensor, and what a foldable table op
    computes from fixed values only."""
    values = set(graph.initializers) | set(key_inputs)
    static = {vi.name for vi in graph.inputs} | values
    fixed = set()
    for n in graph.nodes:
        ins = [i for i in n.inputs if i]
        outs = [o for o in n.outputs if o]
        decl = OPS.get(n.op_type)
        if n.op_type in ("Shape", "Size") and ins and ins[0] in static:
            values.update(outs)
            static.update(outs)
            fixed.update(outs)
            continue
        if decl is not None and decl.foldable and ins and all(i in values for i in ins):
            values.update(outs)
            static.update(outs)
            fixed.update(outs)
            continue
        if n.op_type in _CONTROL:
            continue        # output shapes depend on the branch or trip count: not static
        if n.layer is not None:        # a recurrent layer: Y's shape follows X's
            if n.inputs[0] in static:
                static.update(outs)
            continue
        form = decl.form(n.since_version) if decl is not None else None
        params = form.shape_params if form is not None else ()
        if all(i in static for i in ins) and all(
                n.input(p) == "" or n.input(p) in values for p in params):
            static.update(outs)
    return fixed, static


class Specialiser:
    """Builds and caches the specialised runs of one plan."""

    def __init__(self, plan):
        self.plan = plan
        self.key_inputs = condition_inputs(plan.graph)
        self.enabled = self.key_inputs is not None
        self._seen = {}
        self._built = {}
        self._lock = threading.Lock()

    def key(self, feed, outputs, optional, run_all):
        """The signature of a feed (None: not specialisable).  It holds each
        input's type, shape, dtype and whether it is C-contiguous (the
        generated code reads arrays as laid out in the recorded run: a
        strided feed under a contiguous one's key failed in a fused loop), so
        a feed whose key has been seen passed the input checks before and
        needs none now."""
        try:
            parts = tuple([(n, type(a), a.shape, a.dtype, a.flags.c_contiguous)
                           for n, a in feed.items()])
        except AttributeError:
            return None
        if not self.key_inputs:
            return (outputs, optional, run_all, parts)
        kb = []
        for name in self.key_inputs:
            a = feed.get(name)
            if a is None or a.size > MAX_KEY_ELEMENTS:
                return None
            kb.append(a.tobytes())
        return (outputs, optional, run_all, parts, tuple(kb))

    def lookup(self, key):
        return self._built.get(key)

    def note(self, key, values, outputs, ctx, optional, run_all):
        """Count a signature; on its second run build its specialised form.
        Returns the run's outputs when it built (the build runs it), else None."""
        with self._lock:
            n = self._seen.get(key, 0) + 1
            self._seen[key] = n
            if len(self._seen) > 4 * MAX_SPECIALISATIONS:
                self._seen.clear()
        if n < 2:
            return None
        try:
            fn, result = build(self.plan, values, outputs, ctx, optional, run_all,
                               self.key_inputs)
        except FastLSTMError:
            raise
        except Exception:
            # the generated run failed where the general path ran (inputs of
            # a form its kernels do not take): this signature stays general
            with self._lock:
                self._seen[key] = -(1 << 30)
            return None
        with self._lock:
            if len(self._built) >= MAX_SPECIALISATIONS:
                self._built.pop(next(iter(self._built)))
            self._built[key] = fn
        return result


def _substitute(graph, recorded, key_inputs):
    """``graph`` with the signature-fixed tensors as constants."""
    from dataclasses import replace
    fixed, _ = signature_values(graph, key_inputs)
    fixed.update(k for k in key_inputs)
    new = {name: np.asarray(recorded[name]) for name in fixed
           if name in recorded and name not in graph.initializers}
    if not new:
        return graph, False
    inits = dict(graph.initializers)
    inits.update(new)
    nodes = [n for n in graph.nodes if not all(o in new or not o for o in n.outputs)]
    inputs = [vi for vi in graph.inputs if vi.name not in key_inputs]
    return replace(graph, nodes=nodes, initializers=inits, inputs=inputs), True


def build(plan, values, outputs, ctx, optional, run_all, key_inputs):
    """(compiled function, outputs of this run) for the signature of ``values``."""
    from .pack import pack_graph
    from .plan import Plan
    from .simplify import drop_dead, drop_identities, fold
    graph = plan.graph
    current = plan
    for _ in range(16):
        recorded = {}
        current.run(outputs, values if current is plan else
                    {k: v for k, v in values.items() if k not in key_inputs},
                    ctx=None, optional=optional, run_all=run_all, record=recorded)
        graph, changed = _substitute(graph, recorded, key_inputs if current is plan else ())
        if not changed:
            break
        g = drop_identities(fold(graph))
        if not run_all:
            g = drop_dead(g)
        graph = pack_graph(g)
        current = Plan(graph, env=plan.env, specialise=False)
    feed = {k: v for k, v in values.items() if k not in key_inputs}
    from .codegen import compile_plan
    fn = compile_plan(current, outputs, feed, optional, run_all)
    result = fn(feed, ctx)
    # (the generated function reads only the inputs it needs: a feed that
    # still holds the key inputs is fine as it is)
    return fn, result
