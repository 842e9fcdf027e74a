"""The execution plan: runners in order, input checks and output liveness.

Built once per session.  ``run`` binds symbolic dims of the fed inputs, checks
them for consistency, and runs only the nodes that the requested outputs need.
"""
import numpy as np

from .errors import FastLSTMError, InvalidInput, UnsupportedOp
from .ops import RUNNERS
from .ops.table import OPS


class RunEnv:
    """What every runner of a session shares: its thread team."""

    def __init__(self, num_threads):
        from ._extension import frontend
        self.num_threads = num_threads
        self.team = frontend.Team(num_threads) if num_threads > 1 else None


class RunContext:
    """Per-run extras for the runners.

    state : dict node name -> (h, c) arrays [num_directions, batch, hidden]
        (c None but for LSTM), used instead of initial_h/initial_c and replaced
        by each node's final state: how a stream carries state between calls.
    lens : int64 array [batch] or None
        Sequence lengths of a packed batch, applied to every recurrent node.
    """
    __slots__ = ("state", "lens")

    def __init__(self, state=None, lens=None):
        self.state = state
        self.lens = lens


def _convert_input(name, a, dtype):
    """An input that is not a plain native-order ndarray, as onnxruntime takes it.

    - an ndarray subclass: viewed as an ndarray;
    - an array in non-native byte order: converted to native order, values
      kept (onnxruntime 1.32 reads such arrays' bytes as if native, which
      gives other numbers);
    - a Python list (nested for rank > 1), or a scalar: converted to the
      model input's dtype as onnxruntime converts lists (floats truncate to
      ints, nonzero becomes True); a bare scalar becomes a rank-0 array
      (onnxruntime 1.32 refuses scalars: fastlstm accepts them);
    - anything else (None, strings, objects): InvalidInput.
    Arrays of another dtype are not converted: as in onnxruntime, they are
    refused by the dtype check that follows.
    """
    if isinstance(a, np.ndarray):
        a = np.asarray(a)
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        return a
    if isinstance(a, (list, tuple, bool, int, float, np.generic)):
        try:
            arr = np.array(a)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"input '{name}' cannot be read as an array: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise InvalidInput(f"input '{name}' must be numbers (a numpy array, a list or a "
                               f"scalar), got values of type {arr.dtype}")
        if dtype is None:
            return arr
        with np.errstate(invalid="ignore", over="ignore"):
            return arr.astype(dtype)
    raise InvalidInput(f"input '{name}' must be a numpy.ndarray (or a list or scalar of "
                       f"numbers), not {type(a).__name__}")


class Plan:
    """Executable form of an ir.Graph."""

    def __init__(self, graph, num_threads=1, env=None, specialise=None):
        self.graph = graph
        self.env = env if env is not None else RunEnv(num_threads)
        if specialise is None:
            from . import config
            specialise = config.SPECIALISE
        if specialise:
            from .specialize import Specialiser
            self._specialiser = Specialiser(self)
            if not self._specialiser.enabled:
                self._specialiser = None
        else:
            self._specialiser = None
        self.constants = graph.initializers
        self.input_infos = {vi.name: vi for vi in graph.inputs}
        self.output_names = [vi.name for vi in graph.outputs]
        consumed = {o for o in self.output_names}
        for n in graph.nodes:
            consumed.update(i for i in n.inputs if i)
        self.runners = []
        for n in graph.nodes:
            cls = RUNNERS.get(n.op_type)
            if cls is None:  # an import builder without a runner: a bug, say so clearly
                raise UnsupportedOp(f"{n.describe()} has no runner", n.op_type, n.domain,
                                    n.since_version, n.name)
            self.runners.append(cls(n, self.constants, consumed, self.env))
        self._live_cache = {}
        self._checked = set()  # signatures of feeds already validated
        self._shape_only = self._shape_only_nodes()
        self._shape_cache = None
        self._all = tuple(range(len(self.runners)))
        self._default_outputs = tuple(self.output_names)
        # per node: its runner, its output names, whether it is shape arithmetic
        self._steps = [(r, tuple(r.node.outputs), k in self._shape_only)
                       for k, r in enumerate(self.runners)]

    def _shape_only_nodes(self):
        """Indices of nodes that compute only from constants and tensor shapes.

        A tensor is *shape-static* when its shape is a function of the graph
        inputs' shapes: graph inputs and constants are, and a node's outputs
        are when all its inputs are and every input whose values set the output
        shape (a Reshape target, Slice bounds, ...) is a constant or a
        *shape value*.  Shape (and Size) of a shape-static tensor is a shape
        value, and so is every output of a node whose inputs are all constants
        or shape values: such nodes give the same answer for the same input
        shapes, so their outputs can be cached on them.
        """
        consts = set(self.constants)
        static = set(self.input_infos) | consts
        values = set(consts)
        only = set()
        for k, n in enumerate(self.graph.nodes):
            ins = [i for i in n.inputs if i]
            if n.op_type in ("Shape", "Size") and ins and ins[0] in static:
                only.add(k)
                values.update(o for o in n.outputs if o)
                static.update(o for o in n.outputs if o)
                continue
            if ins and all(i in values for i in ins) and n.layer is None:
                only.add(k)
                values.update(o for o in n.outputs if o)
                static.update(o for o in n.outputs if o)
                continue
            decl = OPS.get(n.op_type)
            form = decl.form(n.since_version) if decl is not None else None
            params = form.shape_params if form is not None else ()
            if all(i in static for i in ins) and all(
                    n.input(p) == "" or n.input(p) in values for p in params):
                static.update(o for o in n.outputs if o)
        return frozenset(only)

    def _live(self, outputs):
        """Indices of the nodes needed for ``outputs`` (a tuple of names)."""
        live = self._live_cache.get(outputs)
        if live is None:
            need = set(outputs)
            keep = []
            for k in range(len(self.graph.nodes) - 1, -1, -1):
                n = self.graph.nodes[k]
                if any(o in need for o in n.outputs if o):
                    keep.append(k)
                    need.update(i for i in n.inputs if i)
            live = self._live_cache[outputs] = sorted(keep)
        return live

    def check_inputs(self, feed, optional=frozenset()):
        """Validate a feed dict against the model's inputs; bind symbolic dims.

        Inputs named in ``optional`` may be left out (a stream supplies them).
        """
        if not isinstance(feed, dict):
            raise InvalidInput(f"input_feed must be a dict of name -> numpy array, "
                               f"not {type(feed).__name__}")
        # A feed with the same names, types, shapes and dtypes as one already
        # validated passes without redoing every check (saves ~1 us per call).
        try:
            sig = (optional, tuple([(n, type(a), a.shape, a.dtype) for n, a in feed.items()]))
        except AttributeError:
            sig = None
        if sig is not None and sig in self._checked:
            return dict(feed)
        values = self._check_inputs(feed, optional)
        # (a feed that needed converting is converted again next time: only
        # feeds used as given may take the fast path)
        if sig is not None and all(values[n] is feed[n] for n in values):
            if len(self._checked) >= 64:
                self._checked.clear()
            self._checked.add(sig)
        return values

    def _check_inputs(self, feed, optional):
        known = self.input_infos
        for name in feed:
            if name not in known:
                raise InvalidInput(f"'{name}' is not an input of this model; its inputs are "
                                   f"{sorted(known)}")
        dims = {}
        values = {}
        for name, vi in known.items():
            if name not in feed:
                if name in optional:
                    continue
                raise InvalidInput(f"required input '{name}' ({vi.type_str}, shape "
                                   f"{list(vi.shape) if vi.shape is not None else '?'}) "
                                   f"is missing from input_feed")
            a = feed[name]
            if type(a) is not np.ndarray or not a.dtype.isnative:
                a = _convert_input(name, a, vi.dtype)
            if vi.dtype is not None and a.dtype != vi.dtype:
                raise InvalidInput(f"input '{name}' has dtype {a.dtype}, expected {vi.dtype} "
                                   f"({vi.type_str})")
            if vi.shape is not None:
                if a.ndim != len(vi.shape):
                    raise InvalidInput(f"input '{name}' has rank {a.ndim} (shape "
                                       f"{tuple(a.shape)}), expected rank {len(vi.shape)} "
                                       f"{list(vi.shape)}")
                for axis, (want, got) in enumerate(zip(vi.shape, a.shape)):
                    if isinstance(want, int) and want != got:
                        raise InvalidInput(f"input '{name}' has size {got} on axis {axis}, "
                                           f"the model fixes it at {want}")
                    if isinstance(want, str) and want:
                        seen = dims.setdefault(want, (got, name, axis))
                        if seen[0] != got:
                            raise InvalidInput(
                                f"dimension '{want}' is {got} on axis {axis} of input "
                                f"'{name}' but {seen[0]} on axis {seen[2]} of input "
                                f"'{seen[1]}'")
            values[name] = a
        return values

    def recurrent_nodes(self):
        """The runners of the LSTM/GRU/RNN nodes, in order."""
        return [r for r in self.runners if r.node.layer is not None]

    def state_inputs(self):
        """Graph inputs used only as initial_h / initial_c of recurrent nodes."""
        uses = {}
        for n in self.graph.nodes:
            for pos, name in enumerate(n.inputs):
                if name:
                    is_state = n.layer is not None and pos in n.layer.desc.state_inputs
                    uses.setdefault(name, []).append(is_state)
        return frozenset(name for name in self.input_infos
                         if name in uses and all(uses[name]))

    def run(self, output_names, feed, ctx=None, optional=frozenset(), run_all=False,
            outer=None, record=None):
        """Run the graph; returns a list of arrays in ``output_names`` order.

        ``run_all`` runs every node, not just those the outputs need (a stream
        must advance the state of every recurrent node).  ``outer``: values of
        the enclosing scope (a subgraph's run).  ``record``: a dict that gets
        every value of this run (the general path is taken).

        A signature (input shapes and dtypes, and the values If conditions
        read) run a second time is specialised into one generated function
        (``fastlstm.specialize``), used from then on.
        """
        if output_names is None:
            outputs = self._default_outputs
        else:
            if isinstance(output_names, str):
                raise InvalidInput("output_names must be a list of names or None")
            outputs = tuple(output_names)
            for o in outputs:
                if o not in self.output_names:
                    raise InvalidInput(f"'{o}' is not an output of this model; its outputs "
                                       f"are {self.output_names}")
        spec = self._specialiser
        key = None
        if spec is not None and outer is None and record is None:
            key = spec.key(feed, outputs, optional, run_all)
            if key is not None:
                fn = spec.lookup(key)
                if fn is not None:
                    return self._run_fast(fn, feed, ctx)
        values = self.check_inputs(feed, optional)
        if key is not None and all(values[n] is feed[n] for n in values):
            done = spec.note(key, values, outputs, ctx, optional, run_all)
            if done is not None:
                return done
        if outer:       # a subgraph reads its enclosing scope's values
            values.update(outer)
        if self.constants:
            values.update(self.constants)
        # Shape arithmetic depends only on the input shapes: reuse the last run's
        # answer when they are the same (see _shape_only_nodes).
        reuse = False
        if self._shape_only and record is None:
            key = tuple(values[i].shape for i in self.input_infos if i in values)
            cached = self._shape_cache
            reuse = cached is not None and cached[0] == key
            if reuse:
                values.update(cached[1])
        fresh = {}
        steps = self._steps
        for k in (self._all if run_all else self._live(outputs)):
            runner, names, shape_only = steps[k]
            if shape_only:
                if reuse:
                    continue
                for name, v in zip(names, runner(values, ctx)):
                    if name:
                        values[name] = v
                        fresh[name] = v
            else:
                for name, v in zip(names, runner(values, ctx)):
                    if name:
                        values[name] = v
        if fresh and not reuse and record is None:
            self._shape_cache = (key, fresh)
        if record is not None:
            record.update(values)
        return [values[o] for o in outputs]

    def _run_fast(self, fn, values, ctx):
        try:
            return fn(values, ctx)
        except FastLSTMError:
            raise
        except (ValueError, IndexError, TypeError, np.exceptions.AxisError) as e:
            raise InvalidInput(f"{type(e).__name__}: {e}") from None
