"""Runner for LSTM, GRU and RNN nodes: validate inputs, pack, call the front end."""
import numpy as np

from .. import config, limits, pack
from .._extension import frontend
from ..errors import InvalidInput
from ..kernels.registry import GEMM_ADDRESS
from .recurrent_ops import INITIAL_C, INITIAL_H, SEQUENCE_LENS, X, Y, Y_C, Y_H

_F32 = np.dtype(np.float32)


class RecurrentRunner:
    """Runs one recurrent node: validates its inputs and calls the front end."""

    def __init__(self, node, constants, needed, env):
        self.node = node
        self.env = env
        self.layer = node.layer
        self.spec = spec = node.layer.spec
        self.desc = desc = node.layer.desc
        # Constant weights were packed at load (fastlstm.pack.pack_graph);
        # weights fed as graph inputs are packed on every run.
        self.packed = node.layer.packed
        # what every call needs, looked up once
        self.x_name = node.input(X)
        self.seq_name = node.input(SEQUENCE_LENS)
        self.D = spec.num_directions
        self.reverse = list(spec.reverse)
        self.two_phase = desc.two_phase(spec.op_flag)
        self.y_tbdh = node.layer.y_tbdh
        self.n_out = len(node.outputs)
        self.layout = spec.layout
        self.name = node.name
        want = [bool(o) and o in needed for o in node.outputs] + [False] * 3
        self._want = (want[Y], want[Y_H], desc.has_cell and want[Y_C])
        self._state_names = [node.input(INITIAL_H),
                             node.input(INITIAL_C) if desc.has_cell else ""]
        self._parity = 0
        self._frontend = None if self.packed is None else self._bind(self.packed)
        # reduced-precision layers (fastlstm.pack_lowp) take X in their own form
        self._prep = getattr(self.packed, "prepare_x", None)

    def _bind(self, packed):
        """The front end's handle on a packed layer (kernels, pointers, team)."""
        desc = self.desc
        if hasattr(packed, "bind_frontend"):    # fastlstm.pack_lowp.LowpLayer
            return packed.bind_frontend(desc, self.reverse, self.env.team, self.two_phase,
                                        self.y_tbdh)
        return frontend.Layer(desc.step_address, GEMM_ADDRESS, desc.gates,
                              desc.ws_floats(1, pack.padded(packed.hidden)), packed,
                              self.reverse, self.env.team, self.two_phase, self.y_tbdh)

    def frontend_layer(self):
        """The front end's ``Layer`` for this node's packed weights (None while
        they are graph inputs): for benchmarks that time the kernels alone."""
        return self._frontend

    def _err(self, msg):
        return InvalidInput(f"{self.node.describe()}: {msg}")

    def _pack(self, weights):
        """Check and pack weights fed as graph inputs (``weights``: label -> array
        or None, for the op's weight inputs)."""
        spec, desc = self.spec, self.desc
        Wt, Rt = weights["W"], weights["R"]
        if Wt is None or Rt is None:
            raise self._err("inputs W and R are required")
        for label, a in weights.items():
            if a is not None and a.dtype != np.float32:
                raise self._err(f"input {label} has dtype {a.dtype}, expected float32")
        if Rt.ndim != 3:
            raise self._err(f"input R has rank {Rt.ndim}, expected 3")
        H = spec.hidden_size or Rt.shape[-1]
        for label, shape in desc.weight_shapes(spec.num_directions, H).items():
            a = weights[label]
            if a is None:
                continue
            if a.ndim != len(shape) or any(s is not None and s != d
                                           for s, d in zip(shape, a.shape)):
                shown = tuple("input_size" if s is None else s for s in shape)
                raise self._err(f"input {label} has shape {tuple(a.shape)}, expected {shown}")
        return pack.pack_layer(desc, Wt, Rt, weights["B"], weights.get("P"), H, spec.acts,
                               spec.clip, spec.op_flag)

    def __call__(self, values, ctx=None):
        """Run the node.  ``ctx`` (a ``fastlstm.plan.RunContext`` or None) may carry
        the node's state for a stream (used instead of initial_h/initial_c, and
        replaced by the final state) or sequence lengths for a packed batch."""
        node = self.node
        packed, layer = self.packed, self._frontend
        if layer is None:
            inputs = self.desc.inputs
            packed = self._pack({inputs[i]: values[node.input(i)] if node.input(i) else None
                                 for i in self.desc.weight_inputs})
            layer = self._bind(packed)
        H, I = packed.hidden, packed.input_size
        x = values[self.x_name]
        if type(x) is not np.ndarray or x.dtype is not _F32 or x.ndim != 3 or x.shape[2] != I:
            self._check_x(x, I)
        if self._prep is not None:
            x = self._prep(x)
        D = self.D
        if self.layout == 0:
            T, Bn = x.shape[0], x.shape[1]
        else:
            Bn, T = x.shape[0], x.shape[1]
        if T * Bn * D * H * 4 > limits.current_limit():     # Y, before allocating it
            limits.check_shape((T, D, Bn, H), _F32, node, "output Y")
        state = lens = None
        if ctx is not None:
            lens = ctx.lens
            if ctx.state is not None:
                state = ctx.state.get(self.name)
        seq_name = self.seq_name
        if lens is not None:
            if lens.shape != (Bn,):
                raise self._err(f"{len(lens)} sequence lengths for a batch of {Bn}")
        elif seq_name:
            sl = values[seq_name]
            if sl.dtype != np.int32:
                raise self._err(f"input sequence_lens has dtype {sl.dtype}, expected int32")
            if sl.shape != (Bn,):
                raise self._err(f"input sequence_lens has shape {tuple(sl.shape)}, "
                                f"expected ({Bn},) = [batch_size]")
            if Bn and (sl.min() < 0 or sl.max() > T):
                raise self._err(f"input sequence_lens has values in [{sl.min()}, {sl.max()}]; "
                                f"each must be in [0, seq_length={T}]")
            lens = sl.astype(np.int64)
        if state is not None:
            # A stream's state ([D, B, H] whatever the layout) is read as the
            # initial state and overwritten in place with the final one.
            if state[0].shape != (D, Bn, H):
                raise self._err(f"the stream's state is for batch {state[0].shape[1]}, "
                                f"X has batch {Bn}")
            h0, c0 = state
        elif self._state_names[0] or self._state_names[1]:
            h0, c0 = self._initial_states(values, D, Bn, H)
            state = (None, None)
        else:
            h0 = c0 = None
            state = (None, None)
        want = self._want
        self._parity ^= 1       # see kernels.common.IP_ORDER; a race here is harmless
        y, yh, yc = layer.run(x, layout=self.layout, initial_h=h0, initial_c=c0, lens=lens,
                              want_y=want[0], want_yh=want[1], want_yc=want[2],
                              min_work=config.THREAD_MIN_WORK, state_h=state[0],
                              state_c=state[1], parity=self._parity)
        return [y, yh, yc][:self.n_out]

    def direct(self):
        """A function ``run(x, h0, c0) -> (Y, Y_h, Y_c)`` (the node's outputs,
        None where not wanted) for the specialised executor
        (``fastlstm.codegen``), or None where it does not apply: the front
        end's ``Layer.direct`` with this node's settings, or for layers that
        take X in their own form a closure around ``Layer.run``.

        It applies when the weights are packed and there are no sequence
        lengths; the executor calls it only for an input signature whose run
        has already been checked (shapes and dtypes of X and of the initial
        states are the signature's), and not for a stream (whose state comes
        in ``ctx``)."""
        if self._frontend is None or self.seq_name:
            return None
        layer, layout, want, n_out = self._frontend, self.layout, self._want, self.n_out
        min_work = config.THREAD_MIN_WORK

        def state(s):
            if s is None:
                return None
            if layout == 1:
                s = s.transpose(1, 0, 2)
            return s if s.flags.c_contiguous else np.ascontiguousarray(s)

        prep = self._prep
        if prep is None and hasattr(layer, "direct"):
            layer.set_direct(layout, want[0], want[1], want[2], min_work, n_out)
            return layer.direct

        def run(x, h0=None, c0=None):
            if prep is not None:
                x = prep(x)
            self._parity ^= 1
            y, yh, yc = layer.run(x, layout=layout, initial_h=state(h0), initial_c=state(c0),
                                  lens=None, want_y=want[0], want_yh=want[1],
                                  want_yc=want[2], min_work=min_work, state_h=None,
                                  state_c=None, parity=self._parity)
            return [y, yh, yc][:n_out]
        return run

    def _check_x(self, x, I):
        """Raise the error that describes what is wrong with input X (the
        fast check in __call__ only says that something may be)."""
        if not isinstance(x, np.ndarray):
            raise self._err(f"input X must be a numpy.ndarray, not {type(x).__name__}")
        if x.dtype != np.float32:
            raise self._err(f"input X has dtype {x.dtype}, expected float32")
        if x.ndim != 3:
            dims = "[seq_length, batch, input_size]" if self.layout == 0 else \
                "[batch, seq_length, input_size]"
            raise self._err(f"input X has rank {x.ndim}, expected 3 ({dims})")
        if x.shape[2] != I:
            raise self._err(f"input X has input_size {x.shape[2]}, but W expects {I}")

    def _initial_states(self, values, D, Bn, H):
        states = []
        for name, label in zip(self._state_names, ("initial_h", "initial_c")):
            if not name:
                states.append(None)
                continue
            s = values.get(name)
            if s is None:       # a state input left out (run_sequences): zeros
                states.append(None)
                continue
            if s.dtype != np.float32:
                raise self._err(f"input {label} has dtype {s.dtype}, expected float32")
            expect = (D, Bn, H) if self.layout == 0 else (Bn, D, H)
            if s.shape != expect:
                raise self._err(f"input {label} has shape {tuple(s.shape)}, expected {expect}")
            if self.layout == 1:
                s = s.transpose(1, 0, 2)
            states.append(np.ascontiguousarray(s))
        return states
