"""Control flow: If.

An If node keeps its two branches as ir.Graphs in ``then_branch`` and
``else_branch``; at import its inputs become (cond, *captures): the outer
values either branch reads, so that liveness, dead-node removal and file
checks see them like any other input.

Where the condition is known at load (it depends only on constants) the
chosen branch is spliced into the graph (``fastlstm.simplify``).  Where it
depends on what is fed (Silero VAD branches on the sample-rate input and on
tensor shapes), the session specialises the graph per distinct value of what
the condition depends on (``fastlstm.specialize``), so the steady state runs
straight-line code; :class:`IfRunner` is the general path that runs a branch
as a sub-plan.
"""
import numpy as np

from ..errors import InvalidInput, InvalidModel
from .table import op


def _check_branches(node):
    for key in ("then_branch", "else_branch"):
        g = node.attrs.get(key)
        if g is None or not hasattr(g, "nodes"):
            raise InvalidModel(f"{node.describe()}: attribute {key} (a graph) is missing")
        if g.inputs:
            raise InvalidModel(f"{node.describe()}: {key} must take no inputs")
        if len(g.outputs) != len(node.outputs):
            raise InvalidModel(f"{node.describe()}: {key} has {len(g.outputs)} outputs, the "
                               f"node {len(node.outputs)}")


def _build(node, ctx):
    _check_branches(node)
    caps = []
    for key in ("then_branch", "else_branch"):
        for c in node.attrs[key].captures:
            if c not in caps and c != node.inputs[0]:
                caps.append(c)
    from dataclasses import replace
    return replace(node, inputs=(node.inputs[0],) + tuple(caps))


def condition(node, cond):
    """The branch an If takes for condition tensor ``cond``."""
    c = np.asarray(cond)
    if c.size != 1:
        raise InvalidInput(f"{node.describe()}: the condition has {c.size} elements, "
                           f"expected one")
    return node.attrs["then_branch" if bool(c.reshape(-1)[0]) else "else_branch"]


class IfRunner:
    """Runs the branch the condition picks, as a sub-plan reading outer values."""

    def __init__(self, node, constants, needed, env):
        self.node = node
        self.env = env
        self._plans = {}

    def _plan(self, branch):
        p = self._plans.get(id(branch))
        if p is None:
            from ..pack import pack_graph
            from ..plan import Plan
            from ..simplify import simplify_subgraph
            p = self._plans[id(branch)] = Plan(pack_graph(simplify_subgraph(branch)),
                                                env=self.env)
        return p

    def __call__(self, values, ctx=None):
        branch = condition(self.node, values[self.node.inputs[0]])
        outer = {c: values[c] for c in branch.captures}
        return self._plan(branch).run(None, {}, outer=outer)


@op("If", since=1, attrs=["then_branch", "else_branch"], inputs=(1, 1 << 20),
    outputs=(1, 1 << 20), runner=IfRunner, foldable=False)
def if_(node, ins, n):
    """Run one of two subgraphs, chosen by a boolean condition."""
    raise InvalidModel(f"{node.describe()}: an If runs through its runner")


if_.build = _build
