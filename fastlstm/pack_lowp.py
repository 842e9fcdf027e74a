"""Recurrent layers packed with reduced-precision weights (int8, bf16).

Three kinds, each a ``LowpLayer`` the recurrent runner binds like a float
``pack.PackedLayer`` (same front end, other kernels: ``kernels.lowp``):

LSTM, GRU and RNN.

``int8``      fastlstm's own, from float weights: each output column of W and
              R quantized symmetrically to int8 with its own scale; X and h
              quantized per row (per step for h) to 0..127; int32 products.
``bf16``      fastlstm's own, from float weights: W and R rounded to bfloat16
              (nearest even), widened in registers; everything else float32.
``ort-int8``  onnxruntime's ``DynamicQuantizeLSTM``: its int8/uint8 weights and
              scales as given, X quantized with one scale for the whole
              sequence, h with one scale per step for all batch rows, to
              0..255 -- onnxruntime's own integer scheme.

Opt-in only: a session packs its float layers so when asked
(``SessionOptions.weights``); ``fastlstm info`` and the session metadata say so.
"""
from dataclasses import dataclass

import numpy as np

from . import pack
from .kernels import common, int8

MODES = ("float32", "bf16", "int8")
#: Version of the int8 blob and bf16 panel layouts (kernels.int8, BF16_ORDER),
#: recorded in .fastlstm files with the weights
LAYOUT = 1
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass
class LowpDirection:
    R: np.ndarray
    rb: np.ndarray
    P: np.ndarray
    ip: np.ndarray
    fp: np.ndarray


class _FrontView:
    """What the front end reads of a layer (``_frontend.Layer``)."""

    def __init__(self, layer, input_size):
        self.W, self.bias, self.dirs, self.hidden = layer.W, layer.bias, layer.dirs, layer.hidden
        self.input_size = input_size
        self.owner = layer


@dataclass
class LowpLayer:
    """A recurrent layer with reduced-precision weights.

    mode : "int8", "bf16" or "ort-int8"
    op : "LSTM" or "RNN" (the step kernels there are)
    W, bias : the input projection's weights (int8 blob or bf16 panels) and
        bias (zeros where the step adds it)
    dirs : per direction a LowpDirection (R as an int8 blob or bf16 panels)
    hidden, input_size : as ``pack.PackedLayer``
    """
    mode: str
    op: str
    W: np.ndarray
    bias: np.ndarray
    dirs: list
    hidden: int
    input_size: int

    @property
    def quantized_x(self):
        return self.mode in ("int8", "ort-int8")

    def __post_init__(self):
        # what prepare_x needs on every call, worked out once (it runs per stream step)
        self._q = (self.input_size + 3) // 4 + 4      # int8.qrow_floats
        self._per_row = self.mode == "int8"
        self._qmax = np.float32(127.0 if self.mode == "int8" else 255.0)
        self._quantize = int8.quantize_rows
        if self.mode == "bf16":
            self.prepare_x = None       # X goes to the front end as it is

    def prepare_x(self, x):
        """X as the front end takes it for this layer: quantized rows (int8 modes)."""
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        q = self._quantize(x, self.input_size, self._per_row, self._qmax)
        return q.reshape(x.shape[:-1] + (self._q,))

    def kernels(self):
        """(step, gemm, ws_floats) of this layer's kernels."""
        from .kernels import lowp
        G = GATES[self.op]
        if self.op == "GRU":
            if self.mode == "bf16":
                return lowp.gru_bf16_step, lowp.bf16_gemm, lowp.gru_ws_floats
            return lowp.gru_int8_step, lowp.int8_gemm, lowp.gru_ws_floats
        if self.mode == "bf16":
            step = lowp.lstm_bf16_step if self.op == "LSTM" else lowp.rnn_bf16_step
            return step, lowp.bf16_gemm, lowp.bf16_ws_floats(G)
        if self.mode == "ort-int8":
            step = lowp.lstm_int8_ort_step
        else:
            step = lowp.lstm_int8_step if self.op == "LSTM" else lowp.rnn_int8_step
        return step, lowp.int8_gemm, lowp.int8_ws_floats(G)

    def bind_frontend(self, desc, reverse, team, two_phase, y_tbdh):
        """The front end's ``Layer`` for this layer.

        Threads: a two-direction layer runs its directions on two threads; a
        one-direction layer runs on one (the front end's split by hidden tiles
        shares one scratch between threads, where these steps keep the
        quantized h, and a split by rows would give onnxruntime's scheme one
        scale per thread instead of one per step)."""
        from ._extension import frontend
        step, gemm, ws = self.kernels()
        G = GATES[self.op]
        isz = int8.qrow_floats(self.input_size) if self.quantized_x else self.input_size
        return frontend.Layer(step.address, gemm.address, G, ws(1, pack.padded(self.hidden)),
                              _FrontView(self, isz), reverse,
                              team if len(self.dirs) == 2 else None, False, y_tbdh)

    def nbytes(self):
        return int(self.W.nbytes + self.bias.nbytes +
                   sum(d.R.nbytes + d.rb.nbytes + d.P.nbytes for d in self.dirs))


def to_bf16(a):
    """float32 -> bfloat16 bits (uint16), rounded to nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        r[nan] = 0x7FC0
    return r


def from_bf16(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def quantize_columns(wt):
    """Symmetric int8 per column of ``wt[K, N]``: (q int8, scale float32[N])."""
    m = np.abs(wt).max(axis=0) if wt.shape[0] else np.zeros(wt.shape[1], np.float32)
    scale = np.where(m > 0, m / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(wt / scale), -127, 127).astype(np.int8)
    return q, scale


def _int8_blob(wt):
    q, scale = quantize_columns(wt)
    return int8.pack_weights(q, scale, np.zeros(wt.shape[1], np.float32))


#: Order of the 16 bf16 weights of each 16-column run in a panel: the kernel's
#: interleave with zeros (kernels.lowp) turns positions 0-3 and 8-11 into the
#: first 8 float32 columns and 4-7, 12-15 into the next 8.
BF16_ORDER = np.array([0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15])


def _bf16_panels(wt):
    """``wt[K, N]`` (N a multiple of 16) as bf16 panels, each 16-column run in
    BF16_ORDER (panel layout as ``pack.to_panels``)."""
    K, N = wt.shape
    perm = (np.arange(N).reshape(-1, 16)[:, BF16_ORDER]).reshape(-1)
    return to_bf16(pack.to_panels(np.ascontiguousarray(wt[:, perm])))


def from_panels(flat, K, N):
    """The inverse of ``pack.to_panels``: ``Wt[K, N]`` from its panels."""
    out = np.empty((K, N), np.float32)
    at = 0
    for n0 in range(0, N, pack.PANEL):
        w = min(pack.PANEL, N - n0)
        out[:, n0:n0 + w] = flat[at:at + K * w].reshape(K, w)
        at += K * w
    return out


def lowp_from_packed(op, gates, packed, mode):
    """A float ``pack.PackedLayer`` of an LSTM or RNN repacked with ``mode``
    ("int8" or "bf16") weights: its panels read back into tile-ordered
    matrices, then quantized or rounded column by column."""
    G, H, I = gates, packed.hidden, packed.input_size
    Hp = pack.padded(H)
    D = len(packed.dirs)
    Wt = from_panels(packed.W, I, D * G * Hp)
    dirs = []
    for d, pd in enumerate(packed.dirs):
        bias = packed.bias[d * G * Hp:(d + 1) * G * Hp]
        if op == "GRU":
            # the projection keeps its bias; R as kernels.gru packs it: [Rz Rr Rh]
            # (linear_before_reset = 1, Rbh on the h columns of rb) or [Rz Rr] then Rh
            lbr = pd.ip[common.IP_FLAG] != 0
            if lbr:
                parts = [from_panels(pd.R, H, G * Hp)]
                rb = pack.pack_vectors([np.zeros(Hp, np.float32), np.zeros(Hp, np.float32),
                                        pd.rb])
            else:
                parts = [from_panels(pd.R[:H * 2 * Hp], H, 2 * Hp),
                         from_panels(pd.R[H * 2 * Hp:], H, Hp)]
                rb = np.zeros(G * Hp, np.float32)
            Rb = np.concatenate([_int8_blob(p) if mode == "int8" else _bf16_panels(p)
                                 for p in parts])
            dirs.append(LowpDirection(R=Rb, rb=rb, P=pd.P, ip=pd.ip.copy(), fp=pd.fp.copy()))
            continue
        Rt = from_panels(pd.R, H, G * Hp)
        if mode == "int8":
            Rb, rb = _int8_blob(Rt), bias.copy()
        else:
            Rb, rb = _bf16_panels(Rt), np.zeros(G * Hp, np.float32)
        dirs.append(LowpDirection(R=Rb, rb=rb, P=pd.P, ip=pd.ip.copy(), fp=pd.fp.copy()))
    if mode == "int8":
        Wp = _int8_blob(Wt)
        bias = packed.bias.copy() if op == "GRU" else np.zeros(D * G * Hp, np.float32)
    else:
        Wp, bias = _bf16_panels(Wt), packed.bias.copy()
    return LowpLayer(mode=mode, op=op, W=Wp, bias=bias, dirs=dirs, hidden=H, input_size=I)


def ort_int8_layer(W, R, B, P, w_scale, w_zp, r_scale, r_zp, hidden, acts, clip, flag):
    """Pack onnxruntime's DynamicQuantizeLSTM weights: W [D, I, 4H] and R
    [D, H, 4H] int8 or uint8 (transposed, ONNX gate order i, o, f, c), scales
    and zero points per direction ([D] or [D, 4H])."""
    D, I = W.shape[0], W.shape[1]
    H = hidden
    G = 4
    Hp = pack.padded(H)

    def blob(q, scale, zp):
        # q [K, G*H] -> tile-ordered [K, G*Hp]; uint8 shifted to int8 (see int8 docs)
        scale = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (G * H,))
        zp = np.broadcast_to(np.asarray(zp).astype(np.int64).reshape(-1), (G * H,))
        q = q.astype(np.int64)
        if W.dtype == np.uint8:
            q, zp = q - 128, zp - 128
        cols = pack.tile_columns([q[:, g * H:(g + 1) * H].T.astype(np.float32)
                                  for g in range(G)]).astype(np.int8)
        s = pack.pack_vectors(np.split(scale, G))
        z = pack.pack_vectors(np.split(zp.astype(np.float32), G))
        return cols, s, z

    Wcols, Ws, Wz, dirs = [], [], [], []
    for d in range(D):
        c, s, z = blob(W[d], w_scale[d], w_zp[d] if w_zp is not None else 0)
        Wcols.append(c)
        Ws.append(s)
        Wz.append(z)
        c, s, z = blob(R[d], r_scale[d], r_zp[d] if r_zp is not None else 0)
        Bd = np.zeros(2 * G * H, np.float32) if B is None else np.asarray(B[d], np.float32)
        wb, rbias = np.split(Bd[:G * H], G), np.split(Bd[G * H:], G)
        rb = pack.pack_vectors([a + b for a, b in zip(wb, rbias)])
        Pp = pack.pad_rows(np.split(np.zeros(3 * H, np.float32) if P is None
                                    else np.asarray(P[d], np.float32), 3), H)
        ip, fp = pack._params(H, acts[d], flag, clip)
        dirs.append(LowpDirection(R=int8.pack_weights(c, s, z), rb=rb, P=Pp, ip=ip, fp=fp))
    Wp = int8.pack_weights(np.concatenate(Wcols, axis=1), np.concatenate(Ws),
                           np.concatenate(Wz))
    return LowpLayer(mode="ort-int8", op="LSTM", W=Wp, bias=np.zeros(D * G * Hp, np.float32),
                     dirs=dirs, hidden=H, input_size=I)


def convert_graph(graph, mode, _outer=None):
    """Repack every packed float LSTM, GRU and RNN layer of a graph -- and of the
    graphs inside its If, Loop and Scan nodes -- with ``mode`` weights ("int8"
    or "bf16"; "float32" returns the graph).  Returns (graph, kept): ``kept``
    names layers left float32 (none today) with the reason."""
    from dataclasses import replace

    from .ir import Graph
    from .simplify import simplify
    if mode in (None, "float32"):
        return graph, []
    if mode not in MODES:
        raise ValueError(f"weights must be one of {', '.join(MODES)}, not {mode!r}")
    nodes, kept = [], []
    for n in graph.nodes:
        lay = n.layer
        if lay is not None and isinstance(lay.packed, pack.PackedLayer):
            low = lowp_from_packed(lay.spec.op, lay.spec.desc.gates, lay.packed, mode)
            n = replace(n, layer=replace(lay, packed=low))
        subs = {k: v for k, v in n.attrs.items() if isinstance(v, Graph)}
        if subs:
            # a layer in a branch or body whose weights are (made from) outer
            # constants is folded and packed here, with those constants
            # (pack_graph keeps only the ones still read)
            seen = {**(_outer or {}), **graph.initializers}
            attrs = dict(n.attrs)
            for k, g in subs.items():
                g = pack.pack_graph(simplify(replace(g, initializers={**seen,
                                                                      **g.initializers})))
                attrs[k], more = convert_graph(g, mode, seen)
                kept.extend(more)
            n = replace(n, attrs=attrs)
        nodes.append(n)
    if _outer is not None:
        return replace(graph, nodes=nodes), kept
    meta = dict(graph.metadata)
    meta["custom:fastlstm.weights"] = mode
    if kept:
        meta["custom:fastlstm.weights_kept_float32"] = ", ".join(name for name, _ in kept)
    return replace(graph, nodes=nodes, metadata=meta), kept


def check_layer(layer, spec):
    """Every size a reduced-precision layer's kernels trust, against its spec
    (a loaded ``.fastlstm`` file); returns an error message or None."""
    from .kernels import common
    if not isinstance(layer, LowpLayer) or layer.mode not in ("int8", "bf16", "ort-int8"):
        return "reduced-precision weights of an unknown kind"
    if layer.op != spec.op or layer.op not in GATES:
        return f"{layer.mode} weights packed for {layer.op!r} on a {spec.op} node"
    H, I, D = layer.hidden, layer.input_size, spec.num_directions
    if type(H) is not int or type(I) is not int or H < 1 or I < 0 or len(layer.dirs) != D:
        return "bad packed layer sizes"
    G = spec.desc.gates
    Hp = pack.padded(H)
    N = G * Hp

    def blob_ok(b, K, n):
        return (b.dtype == np.float32 and b.ndim == 1 and b.size == int8.wblob_layout(K, n)[4]
                and b[0] == K and b[1] == n)

    f32 = np.dtype(np.float32)
    if layer.mode != "bf16":       # int8, ort-int8: the same blobs
        ok = blob_ok(layer.W, I, D * N)
    else:
        ok = layer.W.dtype == np.uint16 and layer.W.size == I * D * N
    ok = ok and layer.bias.dtype == f32 and layer.bias.size == D * N
    for d in layer.dirs:
        if layer.mode == "bf16":
            ok = ok and d.R.dtype == np.uint16 and d.R.size == H * N
        elif layer.op == "GRU" and d.ip.size == common.IP_LEN and d.ip[common.IP_FLAG] == 0:
            n1 = int8.wblob_layout(H, 2 * Hp)[4]
            ok = ok and d.R.size == n1 + int8.wblob_layout(H, Hp)[4] and blob_ok(
                d.R[:n1], H, 2 * Hp) and blob_ok(d.R[n1:], H, Hp)
        else:
            ok = ok and blob_ok(d.R, H, N)
        ok = ok and d.rb.dtype == f32 and d.rb.size == N
        ok = ok and d.P.dtype == f32 and d.P.size == (3 * Hp if spec.desc.has_cell else 1)
        ok = ok and d.fp.dtype == f32 and d.fp.size == common.FP_LEN
        ok = ok and d.ip.dtype == np.int64 and d.ip.size == common.IP_LEN
        if ok:
            ip = d.ip
            ok = (ip[common.IP_H] == H and ip[common.IP_HP] == Hp and ip[common.IP_P0] == 0
                  and ip[common.IP_P1] == Hp // pack.TILE
                  and all(0 <= ip[common.IP_ACT0 + k] <= 10 for k in range(3)))
    return None if ok else (f"{layer.mode} weights do not match hidden_size={H}, "
                            f"input_size={I}, {D} direction(s)")


def encode(layer, add):
    """JSON-able form of a LowpLayer for the file format (``add(array)`` stores one)."""
    view = (lambda a: a.view(np.int16)) if layer.mode == "bf16" else (lambda a: a)
    return {"kind": "lowp", "layout": LAYOUT, "mode": layer.mode, "op": layer.op,
            "W": add(view(layer.W)),
            "bias": add(layer.bias), "hidden": layer.hidden, "input_size": layer.input_size,
            "dirs": [{"R": add(view(d.R)), "rb": add(d.rb), "P": add(d.P), "ip": add(d.ip),
                      "fp": add(d.fp)} for d in layer.dirs]}


def decode(p, get):
    """A LowpLayer from ``encode``'s form (``get(ref)`` gives an array back)."""
    mode = p["mode"]
    if mode not in ("int8", "bf16", "ort-int8"):
        raise ValueError(f"weights mode {mode!r}")
    if p.get("layout") != LAYOUT:
        raise ValueError(f"reduced-precision weights of layout {p.get('layout')!r}; this "
                         f"fastlstm reads layout {LAYOUT}: convert the model again")
    view = (lambda a: a.view(np.uint16)) if mode == "bf16" else (lambda a: a)
    return LowpLayer(mode=mode, op=p["op"], W=view(get(p["W"])), bias=get(p["bias"]),
                     dirs=[LowpDirection(R=view(get(d["R"])), rb=get(d["rb"]), P=get(d["P"]),
                                         ip=get(d["ip"]), fp=get(d["fp"])) for d in p["dirs"]],
                     hidden=p["hidden"], input_size=p["input_size"])
