"""Everything about a recurrent op, in one descriptor per op: LSTM, GRU, RNN.

Import (``onnx_import.recurrent``), simplification, packing, the runner, the
file-format checks, serving and the command line read these facts here and
nowhere else.  A new variant (reduced-precision weights, a quantized op) is a
new descriptor with its own pack function and step kernel.

The ONNX inputs and outputs of the three ops share their positions (X, W, R,
B, sequence_lens, initial_h at 0-5; LSTM adds initial_c and P), so the
positions are module constants.
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from .. import pack
from ..kernels import gru, lstm, rnn

#: ONNX input and output names, by position (LSTM has them all; GRU and RNN the
#: first six inputs and first two outputs).
INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
OUTPUTS = ("Y", "Y_h", "Y_c")
X, W, R, B, SEQUENCE_LENS, INITIAL_H, INITIAL_C, P = range(8)
Y, Y_H, Y_C = range(3)


@dataclass(frozen=True)
class RecurrentOpDesc:
    """One recurrent op.

    op : ONNX op type
    gates : gates per hidden unit (W and R have gates * hidden_size rows); the
        step kernel's own constant, read from its module
    activation_slots : the activation functions of one direction, by their
        letters in the ONNX equations (LSTM f, g, h)
    default_activations : the activation of each slot when the model names none
    flag_name : the op's own 0/1 attribute (a field of ``ir.RecurrentSpec``), or None
    has_cell : a cell state (initial_c in, Y_c out) and peepholes P (LSTM)
    pack_direction : ``(W, R, B, P, hidden, flag) -> (Wt, bias, R, rb, P)`` for one
        direction (``fastlstm.pack``): the op's gate order and bias folding
    step : the step kernel, a Numba ``cfunc`` with ``kernels.common.STEP_SIG``
    ws_floats : ``(batch, hp) -> floats`` of scratch the step kernel needs
    two_phase_flag : the flag value with which a step runs as two passes that
        threads splitting it must meet between (GRU linear_before_reset = 0), or None
    """
    op: str
    gates: int
    activation_slots: Tuple[str, ...]
    default_activations: Tuple[str, ...]
    flag_name: Optional[str]
    has_cell: bool
    pack_direction: Callable
    step: Any
    ws_floats: Callable
    two_phase_flag: Optional[int] = None

    @property
    def n_activations(self):
        """Activations per direction."""
        return len(self.activation_slots)

    @property
    def inputs(self):
        """ONNX input names of the op, by position."""
        return INPUTS if self.has_cell else INPUTS[:6]

    @property
    def outputs(self):
        """ONNX output names of the op, by position."""
        return OUTPUTS if self.has_cell else OUTPUTS[:2]

    @property
    def state_inputs(self):
        """Positions of the initial states (initial_h, and initial_c)."""
        return (INITIAL_H, INITIAL_C) if self.has_cell else (INITIAL_H,)

    @property
    def weight_inputs(self):
        """Positions of the weights packing reads (W, R, B, and P)."""
        return (W, R, B, P) if self.has_cell else (W, R, B)

    @property
    def step_address(self):
        """C address of the step kernel, for the front end."""
        return self.step.address

    def two_phase(self, flag):
        """Whether a step with this flag value runs as two synchronised passes."""
        return self.two_phase_flag is not None and flag == self.two_phase_flag

    def weight_shapes(self, num_directions, hidden, input_size=None):
        """ONNX shapes of W, R, B (and P) for a layer; None where any size goes."""
        D, G, H = num_directions, self.gates, hidden
        shapes = {"W": (D, G * H, input_size), "R": (D, G * H, H), "B": (D, 2 * G * H)}
        if self.has_cell:
            shapes["P"] = (D, 3 * H)
        return shapes

    def packed_sizes(self, hidden, input_size, num_directions):
        """Element counts of a ``pack.PackedLayer`` of this op: the layer's W and
        bias, and per direction R, rb and P (checked when a file is loaded)."""
        hp = pack.padded(hidden)
        n = num_directions * self.gates * hp
        return {"W": input_size * n, "bias": n, "R": hidden * self.gates * hp, "rb": hp,
                "P": 3 * hp if self.has_cell else 1}


RECURRENT_OPS = {
    "LSTM": RecurrentOpDesc(
        op="LSTM", gates=lstm.GATES, activation_slots=("f", "g", "h"),
        default_activations=("Sigmoid", "Tanh", "Tanh"), flag_name="input_forget",
        has_cell=True, pack_direction=pack.pack_lstm, step=lstm.lstm_step,
        ws_floats=lstm.ws_floats),
    "GRU": RecurrentOpDesc(
        op="GRU", gates=gru.GATES, activation_slots=("f", "g"),
        default_activations=("Sigmoid", "Tanh"), flag_name="linear_before_reset",
        has_cell=False, pack_direction=pack.pack_gru, step=gru.gru_step,
        ws_floats=gru.ws_floats, two_phase_flag=0),
    "RNN": RecurrentOpDesc(
        op="RNN", gates=rnn.GATES, activation_slots=("f",), default_activations=("Tanh",),
        flag_name=None, has_cell=False, pack_direction=pack.pack_rnn, step=rnn.rnn_step,
        ws_floats=rnn.ws_floats),
}
