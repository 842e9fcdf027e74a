"""Packing weights once, at load, into the layout the kernels read.

Layout
------
Hidden units are grouped in tiles of ``TILE`` (16 float32 = one AVX-512
register), H padded up to ``Hp = ntiles*TILE`` with zeros.  A weight tensor
with G gates of H units over K inputs (ONNX W or R: ``[G*H, K]``) is packed
transposed, ``Wt[K, Hp*G]``, with its columns in tile order: for tile p the G
gates of units ``p*TILE .. p*TILE+TILE-1`` sit side by side (GT = G*TILE
columns).  That matrix is then cut into 64-column panels, each stored K x 64
contiguously (``to_panels``), which the register tiles of ``kernels.gemm``
stream front to back.  The gate math reads the G gates of a tile from one
contiguous GT-wide run of the product, so gates never have to be gathered.

The input projection produced with packed W has the same column order, so a
step kernel finds the gates of tile p of row r at ``xp[r*Hp*G + p*GT]``.
"""
from dataclasses import dataclass

import numpy as np

from . import config
from .kernels import common

TILE = config.TILE


def padded(h):
    """Hidden size rounded up to a whole number of tiles."""
    return -(-h // TILE) * TILE


def tile_columns(gates):
    """G ``[H, K]`` gate matrices as ``Wt[K, Hp*G]`` float32 with tile-ordered columns.

    Column ``p*G*TILE + g*TILE + j`` holds gate g of hidden unit ``p*TILE + j``.
    """
    g = len(gates)
    h, k = gates[0].shape
    hp = padded(h)
    a = np.zeros((g, hp, k), np.float32)
    for i, m in enumerate(gates):
        a[i, :h] = m
    # [G, ntiles, TILE, K] -> [K, ntiles, G, TILE]
    a = a.reshape(g, hp // TILE, TILE, k).transpose(3, 1, 0, 2)
    return np.ascontiguousarray(a).reshape(k, g * hp)


def pack_panels(gates):
    """G ``[H, K]`` gate matrices packed for ``panel_gemm``: tile-ordered columns
    (``tile_columns``) cut into 64-column panels (``to_panels``)."""
    return to_panels(tile_columns(gates))


PANEL = config.PANEL


def to_panels(wt):
    """``Wt[K, N]`` (N a multiple of 16) as consecutive 64-column panels, flattened.

    Panel p holds columns ``64p .. 64p+63`` as a ``K x 64`` row-major block (the
    last panel is narrower when 64 does not divide N), so panel p starts at
    element ``64p * K``.  See ``fastlstm.kernels.gemm``.
    """
    K, N = wt.shape
    assert N % 16 == 0
    parts = [wt[:, n0:n0 + PANEL] for n0 in range(0, N, PANEL)]
    return np.ascontiguousarray(np.concatenate([np.ascontiguousarray(p).reshape(-1)
                                                for p in parts])) if parts else \
        np.zeros(0, np.float32)


def pack_vectors(vectors):
    """Pack G length-H vectors into the tile-interleaved ``[ntiles, G, TILE]`` order."""
    g = len(vectors)
    h = vectors[0].shape[0]
    hp = padded(h)
    a = np.zeros((g, hp), np.float32)
    for i, v in enumerate(vectors):
        a[i, :h] = v
    return np.ascontiguousarray(a.reshape(g, hp // TILE, TILE).transpose(1, 0, 2)).reshape(-1)


def pad_rows(vectors, h):
    """G length-H vectors as a flat ``[G, Hp]`` float32 array (plain, not interleaved)."""
    hp = padded(h)
    a = np.zeros((len(vectors), hp), np.float32)
    for i, v in enumerate(vectors):
        a[i, :h] = v
    return a.reshape(-1)


@dataclass
class PackedDirection:
    """The recurrent half of one direction of a layer, ready for the step kernel.

    Attributes
    ----------
    R : float32[H * G*Hp]           recurrent weights Rt in panels (op-specific, see
                                    each kernel)
    rb : float32[Hp]                op-specific bias applied inside the step (GRU Rb_h)
    P : float32[3*Hp]               LSTM peepholes i, o, f (zeros when absent)
    ip : int64[IP_LEN], fp : float32[FP_LEN]  kernel parameters
    """
    R: np.ndarray
    rb: np.ndarray
    P: np.ndarray
    ip: np.ndarray
    fp: np.ndarray


@dataclass
class PackedLayer:
    """A recurrent layer packed for the kernels.

    The input weights of all directions form one matrix ``Wt[I, D*G*Hp]`` (and
    ``bias[D*G*Hp]``), packed in panels, so the projection of every step for
    every direction is a single GEMM; direction d's gates start at column
    ``d*G*Hp``.
    """
    W: np.ndarray
    bias: np.ndarray
    dirs: list
    hidden: int
    input_size: int


def _params(hidden, acts, flag, clip):
    """The stored parameter blocks of one direction (``kernels.common.IP_DTYPE``,
    ``FP_DTYPE``) as the int64 and float32 arrays the kernels read."""
    ip, fp = common.new_params()
    ip["h"] = hidden
    ip["hp"] = padded(hidden)
    for k, (code, alpha, beta) in enumerate(acts):
        ip[f"act{k}"] = code
        fp[f"alpha{k}"] = alpha
        fp[f"beta{k}"] = beta
    ip["flag"] = flag
    ip["p0"] = 0
    ip["p1"] = padded(hidden) // TILE
    ip["phase"] = 0
    ip["has_clip"] = clip is not None
    fp["clip"] = 0.0 if clip is None else clip
    return ip.reshape(1).view(np.int64).copy(), fp.reshape(1).view(np.float32).copy()


def _split_gates(W, R, B, G, H):
    """W, R as G gate matrices each; B as G input and G recurrent bias vectors."""
    W = np.asarray(W, np.float32)
    R = np.asarray(R, np.float32)
    B = np.zeros(2 * G * H, np.float32) if B is None else np.asarray(B, np.float32)
    return np.split(W, G), np.split(R, G), np.split(B[:G * H], G), np.split(B[G * H:], G)


def _no_peepholes():
    return np.zeros(1, np.float32)


def pack_lstm(W, R, B, P, hidden, flag):
    """One LSTM direction (gates i, o, f, c): returns (Wt [I, 4*Hp] tile-ordered,
    bias [4*Hp] = Wb + Rb, R in panels, rb (unused, zeros), P [3*Hp])."""
    wg, rg, wb, rbias = _split_gates(W, R, B, 4, hidden)
    Pp = pad_rows(np.split(np.zeros(3 * hidden, np.float32) if P is None
                           else np.asarray(P, np.float32), 3), hidden)
    return (tile_columns(wg), pack_vectors([a + b for a, b in zip(wb, rbias)]),
            pack_panels(rg), np.zeros(padded(hidden), np.float32), Pp)


def pack_gru(W, R, B, P, hidden, flag):
    """One GRU direction (gates z, r, h; ``flag`` = linear_before_reset).

    z and r always fold Rb into the projection bias; Rb_h only when it is added
    after the product (linear_before_reset = 0), else it stays apart (rb) for
    the step to add inside r (.) (Ht-1*Rh + Rbh).  With linear_before_reset =
    0, R is packed as [Rz Rr] then Rh: the step needs rt of every unit before
    its product with Rh.
    """
    wg, rg, wb, rbias = _split_gates(W, R, B, 3, hidden)
    rb = np.zeros(padded(hidden), np.float32)
    bias = pack_vectors([wb[0] + rbias[0], wb[1] + rbias[1],
                         wb[2] if flag else wb[2] + rbias[2]])
    if flag:
        Rp = pack_panels(rg)
        rb[:hidden] = rbias[2]
    else:
        Rp = np.concatenate([pack_panels(rg[:2]), pack_panels(rg[2:])])
    return tile_columns(wg), bias, Rp, rb, _no_peepholes()


def pack_rnn(W, R, B, P, hidden, flag):
    """One RNN direction: (Wt [I, Hp], bias [Hp] = Wb + Rb, R in panels, rb, P unused)."""
    wg, rg, wb, rbias = _split_gates(W, R, B, 1, hidden)
    return (tile_columns(wg), pack_vectors([wb[0] + rbias[0]]), pack_panels(rg),
            np.zeros(padded(hidden), np.float32), _no_peepholes())


def pack_layer(desc, W, R, B, P, hidden, acts, clip, flag):
    """Pack every direction of a recurrent layer.

    Parameters
    ----------
    desc : ``fastlstm.ops.recurrent_ops.RecurrentOpDesc`` of the op
    W, R : float arrays ``[D, G*H, I]`` and ``[D, G*H, H]`` in ONNX gate order
    B : ``[D, 2*G*H]`` (Wb then Rb) or None
    P : LSTM ``[D, 3*H]`` or None
    acts : per direction, a list of (code, alpha, beta), one per activation of the op
    clip : float or None
    flag : the value of the op's flag (``RecurrentSpec.op_flag``)
    """
    Wts, biases, dirs = [], [], []
    for d in range(W.shape[0]):
        Wt, bias, Rp, rb, Pp = desc.pack_direction(
            W[d], R[d], None if B is None else B[d], None if P is None else P[d], hidden, flag)
        ip, fp = _params(hidden, acts[d], flag, clip)
        Wts.append(Wt)
        biases.append(bias)
        dirs.append(PackedDirection(R=Rp, rb=rb, P=Pp, ip=ip, fp=fp))
    return PackedLayer(W=to_panels(np.concatenate(Wts, axis=1)), bias=np.concatenate(biases),
                       dirs=dirs, hidden=hidden, input_size=W.shape[2])


def pack_graph(graph):
    """Pack, once, every recurrent node whose weights are constants.

    The node's ``layer`` gets ``packed`` (a PackedLayer) and its weight inputs
    are cut loose; initializers nothing else reads are dropped, so a session
    keeps only the packed copy.  Nodes whose weights are graph inputs are left
    to pack on every run.  Returns a new ir.Graph.
    """
    from dataclasses import replace

    from .errors import InvalidModel
    consts = graph.initializers
    nodes = []
    for n in graph.nodes:
        if n.layer is not None and n.layer.packed is None:
            spec, desc = n.layer.spec, n.layer.desc
            names = [n.input(i) for i in desc.weight_inputs]
            if all(not name or name in consts for name in names) and names[0] and names[1]:
                W, R, B = (consts[name] if name else None for name in names[:3])
                P = consts[names[3]] if len(names) > 3 and names[3] else None
                H = spec.hidden_size or int(R.shape[-1])
                if W.ndim != 3 or R.ndim != 3:
                    raise InvalidModel(f"{n.describe()}: W and R must have rank 3")
                packed = pack_layer(desc, W, R, B, P, H, spec.acts, spec.clip, spec.op_flag)
                inputs = list(n.inputs)
                for i in desc.weight_inputs:
                    if i < len(inputs):
                        inputs[i] = ""
                while inputs and not inputs[-1]:
                    inputs.pop()
                n = replace(n, inputs=tuple(inputs), layer=replace(n.layer, packed=packed))
        nodes.append(n)
    used = {i for n in nodes for i in n.inputs if i} | {o.name for o in graph.outputs}
    return replace(graph, nodes=nodes,
                   initializers={k: v for k, v in consts.items() if k in used})
