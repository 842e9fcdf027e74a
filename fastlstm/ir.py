"""The small in-memory form of a model between ONNX import and execution.

Nothing here depends on the ``onnx`` package, so a planned graph can later be
saved and loaded without it.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

Dim = Union[int, str, None]

#: Gates per hidden unit of each recurrent op.
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}

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
    """One operator instance.  ``inputs`` keeps ONNX positions: '' = absent."""
    op_type: str
    name: str
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    attrs: Dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    since_version: int = 0

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


@dataclass
class RecurrentSpec:
    """Validated attributes of an LSTM, GRU or RNN node.

    ``acts`` holds, per direction, the list of (code, alpha, beta) activations in
    the op's order (LSTM f, g, h; GRU f, g; RNN f).  ``flag`` is LSTM's
    input_forget or GRU's linear_before_reset.
    """
    op: str
    direction: str
    hidden_size: Optional[int]
    layout: int
    clip: Optional[float]
    flag: int
    acts: List[List[Tuple[int, float, float]]]
    activation_names: List[str]

    @property
    def num_directions(self):
        return 2 if self.direction == "bidirectional" else 1

    @property
    def reverse(self):
        """Per direction, whether it walks time backwards."""
        return {"forward": [False], "reverse": [True],
                "bidirectional": [False, True]}[self.direction]


@dataclass
class Graph:
    """A whole model: named inputs/outputs, nodes in topological order, constants."""
    inputs: List[ValueInfo]
    outputs: List[ValueInfo]
    nodes: List[Node]
    initializers: Dict[str, np.ndarray]
    opsets: Dict[str, int]
    metadata: Dict[str, str] = field(default_factory=dict)
