"""The small in-memory form of a model between ONNX import and execution.

Nothing here depends on the ``onnx`` package, so a planned graph can later be
saved and loaded without it.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

Dim = Union[int, str, None]

#: ``direction`` attribute of a recurrent op -> per direction, whether it walks
#: time backwards (its length is the number of directions).
DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def num_directions(direction):
    """1 or 2: how many directions a recurrent op with this ``direction`` runs."""
    return len(DIRECTIONS[direction])

#: ONNX TensorProto element type -> (numpy dtype, ORT-style type string)
ELEM_TYPES = {
    1: (np.dtype(np.float32), "tensor(float)"),
    2: (np.dtype(np.uint8), "tensor(uint8)"),
    3: (np.dtype(np.int8), "tensor(int8)"),
    5: (np.dtype(np.int16), "tensor(int16)"),
    6: (np.dtype(np.int32), "tensor(int32)"),
    7: (np.dtype(np.int64), "tensor(int64)"),
    9: (np.dtype(np.bool_), "tensor(bool)"),
    10: (np.dtype(np.float16), "tensor(float16)"),
    11: (np.dtype(np.float64), "tensor(double)"),
}


@dataclass(frozen=True)
class ValueInfo:
    """A named graph input or output: element type and (possibly symbolic) shape.

    ``shape`` is None when the model does not say; a dim is an int, a symbol
    name (str) or None (unknown).
    """
    name: str
    elem_type: int
    shape: Optional[Tuple[Dim, ...]]

    @property
    def dtype(self):
        return ELEM_TYPES[self.elem_type][0] if self.elem_type in ELEM_TYPES else None

    @property
    def type_str(self):
        if self.elem_type in ELEM_TYPES:
            return ELEM_TYPES[self.elem_type][1]
        return f"tensor(elem_type={self.elem_type})"


@dataclass
class Node:
    """One operator instance.  ``inputs`` keeps ONNX positions: '' = absent.

    ``layer`` is set on LSTM, GRU and RNN nodes only (their ``attrs`` are then
    empty: the builder validated them into ``layer.spec``); passes replace it
    with ``dataclasses.replace``, never change it in place.
    """
    op_type: str
    name: str
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    attrs: Dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    since_version: int = 0
    layer: Optional["RecurrentLayer"] = None

    def input(self, i):
        """Name of input ``i`` or '' when absent."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def output(self, i):
        """Name of output ``i`` or '' when not requested."""
        return self.outputs[i] if i < len(self.outputs) else ""

    def describe(self):
        """'LSTM node "lstm_1" (opset 14)' for error messages."""
        dom = f"{self.domain}::" if self.domain else ""
        return f'{dom}{self.op_type} node "{self.name}" (since opset {self.since_version})'


@dataclass(frozen=True)
class RecurrentSpec:
    """Validated attributes of an LSTM, GRU or RNN node.

    ``acts`` holds, per direction, the (code, alpha, beta) of each activation in
    the op's order (LSTM f, g, h; GRU f, g; RNN f); ``activation_names`` the
    names, all directions in a row.  ``input_forget`` (LSTM) and
    ``linear_before_reset`` (GRU) are 0 for the ops that do not have them.
    Everything else about the op is in ``desc`` (``fastlstm.ops.recurrent_ops``).
    """
    op: str
    direction: str
    hidden_size: Optional[int]
    layout: int
    clip: Optional[float]
    acts: Tuple[Tuple[Tuple[int, float, float], ...], ...]
    activation_names: Tuple[str, ...]
    input_forget: int = 0
    linear_before_reset: int = 0

    @property
    def desc(self):
        """The op's descriptor (gates, activations, kernels, packing)."""
        from .ops.recurrent_ops import RECURRENT_OPS
        return RECURRENT_OPS[self.op]

    @property
    def op_flag(self):
        """The value of the op's own flag attribute (``desc.flag_name``), 0 if none:
        what the kernels read in their flag slot."""
        name = self.desc.flag_name
        return getattr(self, name) if name else 0

    @property
    def num_directions(self):
        return num_directions(self.direction)

    @property
    def reverse(self):
        """Per direction, whether it walks time backwards."""
        return DIRECTIONS[self.direction]


@dataclass(frozen=True)
class RecurrentLayer:
    """What the passes know about a recurrent node, beyond its inputs and outputs.

    spec : the validated attributes (import)
    packed : a ``fastlstm.pack.PackedLayer`` once its constant weights are packed
        (``pack.pack_graph``); None while the weights are graph inputs
    y_tbdh : the kernels write Y as [T, B, D, H] instead of [T, D, B, H]
        (``simplify.fuse_y_transpose``)
    """
    spec: RecurrentSpec
    packed: Any = None
    y_tbdh: bool = False

    @property
    def desc(self):
        return self.spec.desc

    @property
    def hidden_size(self):
        """Hidden size, or None while neither the attribute nor packed weights say."""
        return self.packed.hidden if self.packed is not None else self.spec.hidden_size


@dataclass
class Graph:
    """A whole model: named inputs/outputs, nodes in topological order, constants."""
    inputs: List[ValueInfo]
    outputs: List[ValueInfo]
    nodes: List[Node]
    initializers: Dict[str, np.ndarray]
    opsets: Dict[str, int]
    metadata: Dict[str, str] = field(default_factory=dict)
    #: for a subgraph (If branch, Loop body): the enclosing scopes' values it reads
    captures: Tuple[str, ...] = ()
