"""Builders for LSTM, GRU and RNN: validate every attribute at import.

Activation alpha/beta lists are consumed in the order of the activations, each
activation taking a value only if it has that parameter (LeakyRelu takes an
alpha, Tanh none), and falling back to its default when the list runs out.
This is how onnxruntime reads them; the ONNX text ("consumed in the order of
activation functions") allows it.
"""
from dataclasses import replace

import numpy as np

from ..errors import InvalidModel, UnsupportedOp
from ..ir import DIRECTIONS, RecurrentLayer, RecurrentSpec
from ..kernels.activations import ACTIVATIONS
from ..ops.recurrent_ops import RECURRENT_OPS
from .registry import register

_USES_ALPHA = {"Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"}
_USES_BETA = {"Affine", "ScaledTanh", "HardSigmoid"}
_CANONICAL = {name.lower(): name for name in ACTIVATIONS}

_COMMON_ATTRS = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                 "hidden_size"}


def _fail(node, msg):
    raise InvalidModel(f"{node.describe()}: {msg}")


def resolve_activations(node, names, alphas, betas):
    """Turn ONNX activation names + alpha/beta lists into (code, alpha, beta) triples."""
    out = []
    ai = bi = 0
    for raw in names:
        name = _CANONICAL.get(str(raw).lower())
        if name is None:
            raise UnsupportedOp(f"{node.describe()}: activation '{raw}' is not one of "
                                f"{', '.join(ACTIVATIONS)}", node.op_type, node.domain,
                                node.since_version, node.name)
        code, alpha, beta = ACTIVATIONS[name]
        if name in _USES_ALPHA and ai < len(alphas):
            alpha = float(alphas[ai])
            ai += 1
        if name in _USES_BETA and bi < len(betas):
            beta = float(betas[bi])
            bi += 1
        out.append((code, alpha, beta))
    return out


def _build(node, ctx):
    op = node.op_type
    desc = RECURRENT_OPS[op]
    n_act, flag_name = desc.n_activations, desc.flag_name
    max_in, max_out = len(desc.inputs), len(desc.outputs)
    allowed = set(_COMMON_ATTRS)
    if flag_name:
        allowed.add(flag_name)
    if node.since_version >= 14:
        allowed.add("layout")
    for key in node.attrs:
        if key not in allowed:
            raise UnsupportedOp(f"{node.describe()}: attribute '{key}' is not defined for "
                                f"{op}-{node.since_version}", op, node.domain,
                                node.since_version, node.name)
    ctx.require_inputs(node, 3, max_in)
    if len(node.outputs) > max_out:
        _fail(node, f"has {len(node.outputs)} outputs, {op} has at most {max_out}")
    a = node.attrs
    direction = a.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction not in DIRECTIONS:
        _fail(node, f"direction '{direction}' must be forward, reverse or bidirectional")
    D = len(DIRECTIONS[direction])
    layout = int(a.get("layout", 0))
    if layout not in (0, 1):
        _fail(node, f"layout {layout} must be 0 or 1")
    hidden = a.get("hidden_size")
    if hidden is not None:
        hidden = int(hidden)
        if hidden < 1:
            _fail(node, f"hidden_size {hidden} must be >= 1")
    clip = a.get("clip")
    if clip is not None:
        clip = float(clip)
        # 0 clamps every activation input to 0 (onnxruntime runs it for RNN,
        # refuses it for LSTM and GRU); infinity clamps nothing.
        if not clip >= 0:
            _fail(node, f"clip {clip} must be a number >= 0")
    flag = int(a.get(flag_name, 0)) if flag_name else 0
    if flag not in (0, 1):
        _fail(node, f"{flag_name} must be 0 or 1, got {flag}")
    names = [n.decode() if isinstance(n, bytes) else n for n in a.get("activations", [])]
    if names and len(names) != n_act * D:
        _fail(node, f"activations lists {len(names)} functions; a {direction} {op} needs "
                    f"{n_act * D} ({n_act} per direction)")
    if not names:
        names = list(desc.default_activations) * D
    triples = resolve_activations(node, names, list(a.get("activation_alpha", [])),
                                  list(a.get("activation_beta", [])))
    acts = tuple(tuple(triples[d * n_act:(d + 1) * n_act]) for d in range(D))

    # Weights that are constants can be checked now; the rest is checked per run.
    W = ctx.constant(node.input(1))
    R = ctx.constant(node.input(2))
    if R is not None and hidden is None:
        hidden = int(R.shape[-1]) if R.ndim == 3 else None
    for idx in desc.weight_inputs:
        label = desc.inputs[idx]
        arr = ctx.constant(node.input(idx))
        if arr is None:
            continue
        if arr.dtype != np.float32:
            raise UnsupportedOp(f"{node.describe()}: input {label} '{node.input(idx)}' is "
                                f"{arr.dtype}; fastlstm computes in float32 only",
                                op, node.domain, node.since_version, node.name)
        if hidden is not None:
            expect = desc.weight_shapes(D, hidden)[label]
            if arr.ndim != len(expect) or any(e is not None and e != s
                                              for e, s in zip(expect, arr.shape)):
                shown = tuple("I" if e is None else e for e in expect)
                _fail(node, f"{label} '{node.input(idx)}' has shape {tuple(arr.shape)}, "
                            f"expected {shown} for direction={direction}, "
                            f"hidden_size={hidden}")
    if W is not None and R is not None and W.shape[1] != R.shape[1]:
        _fail(node, f"W and R disagree on gates*hidden_size: {W.shape} vs {R.shape}")
    ctx.require_float(node, node.input(0), "X")
    flags = {flag_name: flag} if flag_name else {}
    spec = RecurrentSpec(op=op, direction=direction, hidden_size=hidden, layout=layout,
                         clip=clip, acts=acts, activation_names=tuple(names), **flags)
    return replace(node, attrs={}, layer=RecurrentLayer(spec))


for _op in RECURRENT_OPS:
    register(_op, [7, 14, 22])(_build)
