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

from .. import limits
from ..errors import InvalidInput, InvalidModel, UnsupportedOp
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
    outputs=(1, 1 << 20), shape_params=tuple(range(1024)), runner=IfRunner, foldable=False)
def if_(node, ins, n):
    """Run one of two subgraphs, chosen by a boolean condition."""
    # (every input is declared shape-setting: which branch runs, and what it
    # computes from the values it reads, sets the output shapes; so a Shape of
    # an If output is never cached per input shapes by the executor)
    raise InvalidModel(f"{node.describe()}: an If runs through its runner")


if_.build = _build


# ------------------------------------------------------------------ Loop, Scan
#
# A Loop or Scan keeps its body as an ir.Graph in ``body``; at import its
# inputs become (its ONNX inputs, *captures): the outer values the body reads,
# so that liveness, dead-node removal and specialisation see them.  The body
# is planned once, when the node's runner is built (outer constants it reads
# become its own, so recurrent nodes in it are packed once); every iteration
# runs that plan with the iteration's values, which pass from one iteration
# to the next without copies.  Output shapes depend on input *values* (the
# trip count, the condition): every input is declared shape-setting, so no
# output is taken as fixed by input shapes alone.

#: every input position of a Loop or Scan sets its output shapes
_ALL_INPUTS = tuple(range(1024))


def _with_captures(node, n_real):
    from dataclasses import replace
    caps = []
    for c in node.attrs["body"].captures:
        if c not in caps:
            caps.append(c)
    inputs = tuple(node.inputs) + ("",) * (n_real - len(node.inputs))
    return replace(node, inputs=inputs[:n_real] + tuple(caps))


def _body(node):
    g = node.attrs.get("body")
    if g is None or not hasattr(g, "nodes"):
        raise InvalidModel(f"{node.describe()}: attribute body (a graph) is missing")
    return g


def _build_loop(node, ctx):
    body = _body(node)
    n_in = len(node.inputs)
    N = max(n_in - 2, 0)
    if len(body.inputs) != 2 + N:
        raise InvalidModel(f"{node.describe()}: the body takes {len(body.inputs)} inputs; "
                           f"a Loop with {N} loop-carried values needs {2 + N} (iteration "
                           f"number, condition, the values)")
    K = len(node.outputs) - N
    if K < 0 or len(body.outputs) != 1 + N + K:
        raise InvalidModel(f"{node.describe()}: the body has {len(body.outputs)} outputs; "
                           f"with {N} loop-carried values and {max(K, 0)} scan outputs it "
                           f"needs {1 + N + max(K, 0)}")
    return _with_captures(node, 2 + N)


def _plan_body(node, constants, env):
    """The body's plan, built once; outer constants it reads become its own."""
    from dataclasses import replace
    from ..pack import pack_graph
    from ..plan import Plan
    from ..simplify import simplify_subgraph
    body = node.attrs["body"]
    inner = {c: constants[c] for c in body.captures if c in constants}
    if inner:
        inits = dict(body.initializers)
        inits.update(inner)
        body = replace(body, initializers=inits,
                       captures=tuple(c for c in body.captures if c not in inner))
    body = pack_graph(simplify_subgraph(body))
    return Plan(body, env=env, specialise=False), body


def _as_declared(value, vi):
    """A scalar fed to a body input declared with shape [1] (some exporters do)."""
    if vi.shape is not None and len(vi.shape) == 1 and value.ndim == 0:
        return value.reshape(1)
    return value


def _scalar(node, a, what):
    a = np.asarray(a)
    if a.size != 1:
        raise InvalidInput(f"{node.describe()}: {what} has {a.size} elements, expected one")
    return a.reshape(-1)[0]


def _empty_scan_output(vi, dtype_hint=None):
    """Scan output of zero iterations: [0, *the body output's shape] when the
    body declares it fully, else [0]."""
    shape = vi.shape
    dims = (0,) + tuple(shape) if shape is not None and all(
        isinstance(d, int) for d in shape) else (0,)
    dtype = vi.dtype if vi.dtype is not None else (dtype_hint or np.float32)
    return np.zeros(dims, dtype)


class LoopRunner:
    """Runs a Loop: the body plan once per iteration while the trip count and
    the condition allow; loop-carried values fed back, scan outputs stacked
    on a new first axis."""

    def __init__(self, node, constants, needed, env):
        self.node = node
        self.plan, body = _plan_body(node, constants, env)
        self.n_real = len(body.inputs)
        self.N = self.n_real - 2
        self.body_inputs = [vi.name for vi in body.inputs]
        self.body_infos = body.inputs
        self.body_outputs = body.outputs
        self.captures = body.captures
        self.optional = frozenset(self.body_inputs)

    def __call__(self, values, ctx=None):
        node, N = self.node, self.N
        m_name, c_name = node.input(0), node.input(1)
        M = int(_scalar(node, values[m_name], "the trip count M")) if m_name else None
        cond = bool(_scalar(node, values[c_name], "the condition")) if c_name else True
        carried = [values[node.inputs[2 + k]] for k in range(N)]
        outer = {c: values[c] for c in self.captures}
        n_scan = len(self.body_outputs) - 1 - N
        scans = [[] for _ in range(n_scan)]
        scan_bytes = [0] * n_scan       # each scan output, stacked, is one array
        it_vi, cond_vi = self.body_infos[0], self.body_infos[1]
        names = self.body_inputs
        i = 0
        while (M is None or i < M) and cond:
            feed = dict(outer)
            feed[names[0]] = _as_declared(np.array(i, np.int64), it_vi)
            feed[names[1]] = _as_declared(np.array(cond, np.bool_), cond_vi)
            for k in range(N):
                feed[names[2 + k]] = carried[k]
            outs = self.plan.run(None, {}, optional=self.optional, outer=feed)
            if c_name:      # without a condition input the body's is ignored (ONNX)
                cond = bool(_scalar(node, outs[0], "the body's condition output"))
            carried = outs[1:1 + N]
            for k in range(n_scan):
                y = np.array(outs[1 + N + k], copy=True)
                scan_bytes[k] += y.nbytes
                limits.check_bytes(scan_bytes[k], f"scan output {k} after {i + 1} iterations",
                                   node)
                scans[k].append(y)
            i += 1
        res = list(carried)
        for k in range(n_scan):
            if scans[k]:
                try:
                    res.append(np.stack(scans[k]))
                except ValueError:
                    raise InvalidInput(f"{node.describe()}: scan output {k} changes shape "
                                       f"between iterations ({scans[k][0].shape}, ...)")
            else:
                res.append(_empty_scan_output(self.body_outputs[1 + N + k]))
        return res


@op("Loop", since=1, attrs=["body"], inputs=(0, 1 << 20), outputs=(1, 1 << 20),
    shape_params=_ALL_INPUTS, runner=LoopRunner, foldable=False)
def loop(node, ins, n):
    """Run a body graph repeatedly: trip count, condition, loop-carried values
    and stacked scan outputs."""
    raise InvalidModel(f"{node.describe()}: a Loop runs through its runner")


loop.build = _build_loop


def _scan_attrs(node, M, K):
    """(input axes, input directions, output axes, output directions), checked."""
    a = node.attrs

    def ints(key, n):
        v = a.get(key)
        if v is None:
            return [0] * n
        v = [int(x) for x in v]
        if len(v) != n:
            raise InvalidModel(f"{node.describe()}: {key} has {len(v)} entries, expected {n}")
        return v

    ia, idr = ints("scan_input_axes", M), ints("scan_input_directions", M)
    oa, odr = ints("scan_output_axes", K), ints("scan_output_directions", K)
    for d in idr + odr:
        if d not in (0, 1):
            raise InvalidModel(f"{node.describe()}: scan directions must be 0 or 1, got {d}")
    return ia, idr, oa, odr


def _build_scan(node, ctx):
    body = _body(node)
    if node.since_version < 9:
        raise UnsupportedOp(f"{node.describe()}: Scan 8 (the form with a batch axis and "
                            f"sequence_lens) is not supported; re-export at opset 9 or later",
                            node.op_type, node.domain, node.since_version, node.name)
    M = node.attrs.get("num_scan_inputs")
    if M is None:
        raise InvalidModel(f"{node.describe()}: attribute num_scan_inputs is missing")
    M = int(M)
    n_in = len(node.inputs)
    N = n_in - M
    if M < 1 or N < 0:
        raise InvalidModel(f"{node.describe()}: num_scan_inputs={M} with {n_in} inputs")
    K = len(node.outputs) - N
    if len(body.inputs) != n_in:
        raise InvalidModel(f"{node.describe()}: the body takes {len(body.inputs)} inputs, "
                           f"the node has {n_in}")
    if K < 0 or len(body.outputs) != N + K:
        raise InvalidModel(f"{node.describe()}: the body has {len(body.outputs)} outputs, "
                           f"the node {len(node.outputs)}")
    for i, name in enumerate(node.inputs):
        if not name:
            raise InvalidModel(f"{node.describe()}: input {i} is empty")
    _scan_attrs(node, M, K)
    return _with_captures(node, n_in)


class ScanRunner:
    """Runs a Scan (9+): scan inputs sliced along their axes (either direction),
    state variables fed back, scan outputs stacked along their axes."""

    def __init__(self, node, constants, needed, env):
        self.node = node
        self.plan, body = _plan_body(node, constants, env)
        self.M = int(node.attrs["num_scan_inputs"])
        self.n_real = len(body.inputs)
        self.N = self.n_real - self.M
        self.K = len(body.outputs) - self.N
        self.axes = _scan_attrs(node, self.M, self.K)
        self.body_inputs = [vi.name for vi in body.inputs]
        self.body_outputs = body.outputs
        self.captures = body.captures
        self.optional = frozenset(self.body_inputs)

    def __call__(self, values, ctx=None):
        node, N, M, K = self.node, self.N, self.M, self.K
        ia, idr, oa, odr = self.axes
        state = [values[node.inputs[k]] for k in range(N)]
        xs = []
        T = None
        for j in range(M):
            x = np.asarray(values[node.inputs[N + j]])
            ax = ia[j] + x.ndim if ia[j] < 0 else ia[j]
            if not 0 <= ax < x.ndim:
                raise InvalidInput(f"{node.describe()}: scan_input_axes[{j}]={ia[j]} is out of "
                                   f"range for scan input {j} of rank {x.ndim}")
            x = np.moveaxis(x, ax, 0)
            if T is None:
                T = x.shape[0]
            elif x.shape[0] != T:
                raise InvalidInput(f"{node.describe()}: scan inputs have {T} and {x.shape[0]} "
                                   f"steps along their scan axes")
            xs.append(x[::-1] if idr[j] else x)
        outer = {c: values[c] for c in self.captures}
        names = self.body_inputs
        scans = [None] * K
        for t in range(T):
            feed = dict(outer)
            for k in range(N):
                feed[names[k]] = state[k]
            for j in range(M):
                feed[names[N + j]] = xs[j][t]
            outs = self.plan.run(None, {}, optional=self.optional, outer=feed)
            state = outs[:N]
            for k in range(K):
                y = np.asarray(outs[N + k])
                if scans[k] is None:
                    scans[k] = np.empty((T,) + y.shape, y.dtype)
                elif y.shape != scans[k].shape[1:]:
                    raise InvalidInput(f"{node.describe()}: scan output {k} changes shape "
                                       f"between steps ({scans[k].shape[1:]}, {y.shape})")
                scans[k][T - 1 - t if odr[k] else t] = y
        res = list(state)
        for k in range(K):
            y = scans[k] if scans[k] is not None else _empty_scan_output(
                self.body_outputs[N + k])
            ax = oa[k] + y.ndim if oa[k] < 0 else oa[k]
            if not 0 <= ax < y.ndim:
                raise InvalidInput(f"{node.describe()}: scan_output_axes[{k}]={oa[k]} is out "
                                   f"of range for scan output {k} of rank {y.ndim}")
            res.append(np.ascontiguousarray(np.moveaxis(y, 0, ax)) if ax else y)
        return res


@op("Scan", since=8, attrs=["body", "num_scan_inputs", "directions"], inputs=(0, 1 << 20),
    outputs=(1, 1 << 20), shape_params=_ALL_INPUTS, runner=ScanRunner, foldable=False)
def scan_8(node, ins, n):
    """Run a body graph over slices of the scan inputs, carrying state variables."""
    raise InvalidModel(f"{node.describe()}: a Scan runs through its runner")


@op("Scan", since=9, attrs=["body", "num_scan_inputs", "scan_input_axes",
                            "scan_input_directions", "scan_output_axes",
                            "scan_output_directions"],
    inputs=(1, 1 << 20), outputs=(1, 1 << 20), shape_params=_ALL_INPUTS, runner=ScanRunner,
    foldable=False)
def scan_9(node, ins, n):
    """Run a body graph over slices of the scan inputs, carrying state variables."""
    raise InvalidModel(f"{node.describe()}: a Scan runs through its runner")


scan_8.build = _build_scan
scan_9.build = _build_scan
