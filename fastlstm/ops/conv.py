"""Convolution and pooling: Conv, ConvTranspose, MaxPool, AveragePool,
GlobalAveragePool, GlobalMaxPool (float32, 1 to 3 spatial axes).

Conv and ConvTranspose run through :class:`ConvRunner`, which packs constant
weights once at load; their table functions (used to fold constants) run the
same kernels.  The pools call their kernels (``fastlstm.kernels.pool``)
directly; for the specialised executor their ``bind`` works the geometry out
once for the recorded shape.  Geometry (output size, padding from
``auto_pad``, ``ceil_mode``) is worked out here, once per input shape, into
the int64 block the kernels read (``fastlstm.kernels.conv``).
"""
import copy

import numpy as np

from .. import limits
from ..errors import FastLSTMError, InvalidInput, InvalidModel, UnsupportedOp
from .table import attr, op

_F32 = np.dtype(np.float32)
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _kernels():
    """The Numba kernels, compiled (or loaded from cache) on first use, so
    ``import fastlstm`` does not pay for them."""
    from ..kernels import conv
    return conv


def _unsupported(node, msg):
    return UnsupportedOp(f"{node.describe()}: {msg}", node.op_type, node.domain,
                         node.since_version, node.name)


def _bad_input(node, msg):
    return InvalidInput(f"{node.describe()}: {msg}")


def _ints(node, name):
    v = attr(node, name)
    return None if v is None else [int(a) for a in v]


# ---- attribute checks at import ----------------------------------------------------

def _check_common(node, ctx, rank=None, pool=False):
    """Attribute sanity shared by the family; ``rank`` is the number of
    spatial axes when known (from kernel_shape or a constant W)."""
    auto = attr(node, "auto_pad", "NOTSET")
    if auto not in _AUTO_PADS:
        raise InvalidModel(f"{node.describe()}: auto_pad '{auto}' is not one of "
                           f"{', '.join(_AUTO_PADS)}")
    ks = _ints(node, "kernel_shape")
    if ks is not None:
        if rank is not None and len(ks) != rank:
            raise InvalidModel(f"{node.describe()}: kernel_shape {ks} has {len(ks)} axes, "
                               f"the weight has {rank}")
        rank = len(ks)
        if any(k < 1 for k in ks):
            raise InvalidModel(f"{node.describe()}: kernel_shape {ks} must be positive")
    elif pool:
        raise InvalidModel(f"{node.describe()}: attribute kernel_shape is required")
    if rank is not None and not 1 <= rank <= 3:
        raise _unsupported(node, f"{rank} spatial axes (fastlstm runs 1 to 3)")
    for name, lo, factor in (("strides", 1, 1), ("dilations", 1, 1), ("pads", 0, 2),
                             ("output_padding", 0, 1)):
        v = _ints(node, name)
        if v is None:
            continue
        if rank is not None and len(v) != factor * rank:
            raise InvalidModel(f"{node.describe()}: {name} {v} must have {factor * rank} "
                               f"values for {rank} spatial axes")
        if any(a < lo for a in v):
            raise InvalidModel(f"{node.describe()}: {name} {v} must be >= {lo}")
    g = attr(node, "group", 1)
    if int(g) < 1:
        raise InvalidModel(f"{node.describe()}: group {g} must be >= 1")
    for name in ("ceil_mode", "count_include_pad"):
        if attr(node, name, 0) not in (0, 1):
            raise InvalidModel(f"{node.describe()}: {name} must be 0 or 1")
    so = attr(node, "storage_order", 0)
    if so not in (0, 1):
        raise InvalidModel(f"{node.describe()}: storage_order must be 0 or 1")
    ctx.require_float(node, node.input(0), "X")


def _check_conv(node, ctx):
    w = ctx.constant(node.input(1))
    rank = None
    if w is not None:
        if w.ndim < 3:
            raise InvalidModel(f"{node.describe()}: weight W has rank {w.ndim}, expected "
                               f"3 to 5 ([M, C/group, k1, ...])")
        rank = w.ndim - 2
        ks = _ints(node, "kernel_shape")
        if ks is not None and list(w.shape[2:]) != ks:
            raise InvalidModel(f"{node.describe()}: kernel_shape {ks} does not match W "
                               f"{list(w.shape)}")
    _check_common(node, ctx, rank)
    if w is not None:
        g = int(attr(node, "group", 1))
        m = w.shape[1] * g if node.op_type == "ConvTranspose" else w.shape[0]
        if node.op_type == "ConvTranspose" and w.shape[0] % g:
            raise InvalidModel(f"{node.describe()}: W has {w.shape[0]} input channels, not "
                               f"divisible by group {g}")
        if node.op_type == "Conv" and m % g:
            raise InvalidModel(f"{node.describe()}: W has {m} output channels, not "
                               f"divisible by group {g}")
        b = ctx.constant(node.input(2))
        if b is not None and b.shape != (m,):
            raise InvalidModel(f"{node.describe()}: bias B has shape {list(b.shape)}, "
                               f"expected [{m}]")
    for pos, label in ((1, "W"), (2, "B")):
        if node.input(pos):
            ctx.require_float(node, node.input(pos), label)


# ---- geometry -----------------------------------------------------------------------

def _out_and_pads(node, insz, ks, strides, dil, pads, ceil_mode=False):
    """Output sizes and (begin, end) pads per spatial axis, as ONNX defines them
    for Conv and the pools."""
    r = len(insz)
    auto = attr(node, "auto_pad", "NOTSET")
    out, pb, pe = [], [], []
    for i in range(r):
        ek = (ks[i] - 1) * dil[i] + 1
        s = strides[i]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-insz[i] // s)
            total = max(0, (o - 1) * s + ek - insz[i])
            b = total // 2 if auto == "SAME_UPPER" else total - total // 2
            e = total - b
        else:
            b, e = (0, 0) if auto == "VALID" else (pads[i], pads[i + r])
            span = insz[i] + b + e - ek
            if span < 0:
                raise _bad_input(node, f"spatial axis {i} has size {insz[i]} (padded "
                                       f"{insz[i] + b + e}), smaller than the kernel's "
                                       f"extent {ek}")
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= insz[i] + b:     # a window must start inside
                    o -= 1
            else:
                o = span // s + 1
        out.append(o)
        pb.append(b)
        pe.append(e)
    return out, pb, pe


def _pad3(v, fill):
    return [fill] * (3 - len(v)) + list(v)


def _geo(N, G, CIN, COUT, insz, outsz, ks, strides, dil, pb, pe, extra):
    """The int64 block of ``fastlstm.kernels.conv`` (spatial axes padded to 3)."""
    K = _kernels()
    geo = np.zeros(K.GEO_SIZE, np.int64)
    geo[:K.G_NP] = ([N, G, CIN, CIN // G, COUT, COUT // G] + _pad3(insz, 1) +
                    _pad3(outsz, 1) + _pad3(ks, 1) + _pad3(strides, 1) + _pad3(dil, 1) +
                    _pad3(pb, 0) + _pad3(pe, 0))
    for k, v in extra.items():
        geo[k] = v
    return geo


# ---- Conv and ConvTranspose -----------------------------------------------------------

class _Packed:
    """Weights of one node in the kernel's layout, and what they imply.
    ``gemm`` is (weights, bias offset) for ``conv_gemm``, packed on first use
    (shared by the runners ``fused`` makes); None until then and for nodes the
    GEMM does not run (ConvTranspose, groups)."""
    __slots__ = ("w", "kernel", "wshape", "cin", "cout", "bias_off", "np_", "panel", "gemm",
                 "rows", "lanes", "dft", "wino", "_W", "_B")

    def __init__(self, w, kernel, wshape, cin, cout, bias_off, np_, panel, W=None, B=None):
        self.w, self.kernel, self.wshape = w, kernel, wshape
        self.cin, self.cout, self.bias_off, self.np_, self.panel = \
            cin, cout, bias_off, np_, panel
        self.gemm = self.rows = self.lanes = self.dft = self.wino = None
        self._W, self._B = W, B     # the node's weights while the GEMM packing may be needed
        if kernel.py_func.__name__ == "conv_direct":    # the same layout as conv_rows
            self.rows = (w, bias_off)

    def gemm_weights(self):
        """(flat weights, bias offset) for ``conv_gemm``: Wt[taps*CIN, COUT] (rows
        taps outer, channels inner; columns zero-padded to a multiple of 16) in
        the 64-column panels of ``fastlstm.pack.to_panels``, then the bias."""
        g = self.gemm
        if g is None:
            from ..pack import to_panels
            W, B = self._W, self._B
            cout, cin = W.shape[0], W.shape[1]
            taps = int(np.prod(W.shape[2:], dtype=np.int64))
            npad = -(-cout // 16) * 16
            wt = np.zeros((taps * cin, npad), np.float32)
            wt[:, :cout] = W.reshape(cout, cin, taps).transpose(2, 1, 0).reshape(taps * cin, cout)
            flat = to_panels(wt)
            bias = B.reshape(-1) if B is not None else np.zeros(cout, np.float32)
            g = (np.ascontiguousarray(np.concatenate([flat, bias]), np.float32), flat.size)
            self.gemm = g
            if self.rows is not None or not _rows_eligible(self.wshape):
                self._W = self._B = None
        return g

    def rows_weights(self):
        """(flat weights, bias offset) for ``conv_rows``: W in its ONNX layout,
        then the bias (the direct kernel's own packing)."""
        r = self.rows
        if r is None:
            W, B = self._W, self._B
            bias = B.reshape(-1) if B is not None else np.zeros(W.shape[0], np.float32)
            flat = np.ascontiguousarray(np.concatenate([W.reshape(-1), bias]), np.float32)
            r = self.rows = (flat, W.size)
            if self.gemm is not None:
                self._W = self._B = None
        return r

    def lanes_weights(self):
        """(flat weights, bias offset) for ``kernels.conv_lanes``: W as
        [COUT / 8][CIN][taps][8], then the bias; made from ``rows_weights``
        on first use."""
        got = self.lanes
        if got is None:
            from ..kernels import conv_lanes
            got = self.lanes = conv_lanes.pack(*self.rows_weights(), self.cout)
        return got

    def wino_weights(self, m):
        """(flat weights, bias offset) for ``kernels.winograd`` with m x m
        output tiles, packed on first use (with a copy of the panel kernel's
        weights for the inputs it falls back on)."""
        got = self.wino.get(m)
        if got is None:
            from ..kernels import winograd
            got = self.wino[m] = winograd.pack(*self.wino["src"], m)
        return got

    def can_rows(self):
        """Whether ``rows_weights`` can be made (the node's W is at hand)."""
        return self.rows is not None or self._W is not None


def _rows_eligible(wshape):
    """Whether a group-1 Conv of weight shape ``wshape`` may ever run
    ``conv_rows`` by ``_use_rows``'s rule (4 or more output channels, up to 8
    or one input channel): else its W need not be kept once the GEMM has
    packed."""
    return wshape[0] >= 4 and (wshape[0] <= 8 or wshape[1] == 1)


def _pack(node, W, B):
    """Check W (and B) against the node and pack them for the kernels."""
    K = _kernels()
    transpose = node.op_type == "ConvTranspose"
    for label, a in (("W", W), ("B", B)):
        if a is None:
            continue
        if not isinstance(a, np.ndarray) or a.dtype != _F32:
            raise _bad_input(node, f"input {label} must be a float32 array, not "
                                   f"{getattr(a, 'dtype', type(a).__name__)}")
    if W is None:
        raise _bad_input(node, "input W is required")
    if not 3 <= W.ndim <= 5:
        raise _bad_input(node, f"input W has rank {W.ndim}; fastlstm runs 1 to 3 spatial axes "
                               f"(rank 3 to 5)")
    ks = _ints(node, "kernel_shape")
    if ks is not None and list(W.shape[2:]) != ks:
        raise _bad_input(node, f"input W has shape {list(W.shape)}, kernel_shape is {ks}")
    G = int(attr(node, "group", 1))
    taps = int(np.prod(W.shape[2:], dtype=np.int64))
    if transpose:
        cin, cgo = W.shape[0], W.shape[1]
        cout = cgo * G
        if cin % G:
            raise _bad_input(node, f"input W has {cin} input channels, not divisible by "
                                   f"group {G}")
    else:
        cout, cgi = W.shape[0], W.shape[1]
        cin = cgi * G
        if cout % G:
            raise _bad_input(node, f"input W has {cout} output channels, not divisible by "
                                   f"group {G}")
    if B is not None and B.shape != (cout,):
        raise _bad_input(node, f"input B has shape {list(B.shape)}, expected [{cout}]")
    np_ = 0
    panel = False
    if transpose:
        cgi = cin // G
        # [CIN, CGO, taps] -> [G][CGI][taps][CGO]: each input element adds a row
        flat = W.reshape(G, cgi, cgo, taps).transpose(0, 1, 3, 2).reshape(-1)
        kernel = K.kernel("conv_transpose")
    else:
        cgo = cout // G
        cgi = W.shape[1]
        panel = 2 * cgo >= K.NC
        if panel:
            # [COUT, CGI, taps] -> [G][panel][taps][CGI][NC], output channels zero-padded
            np_ = -(-cgo // K.NC)
            wr = np.zeros((G, np_ * K.NC, taps * cgi), np.float32)
            wr[:, :cgo] = W.reshape(G, cgo, cgi, taps).transpose(0, 1, 3, 2).reshape(
                G, cgo, taps * cgi)
            flat = wr.reshape(G, np_, K.NC, cgi * taps).transpose(0, 1, 3, 2).reshape(-1)
            kernel = K.kernel("conv_panel")
        else:
            flat = W.reshape(-1)
            kernel = K.kernel("conv_direct")
    # the bias follows the weights, zeros when the node has none (the panel
    # kernel adds it unconditionally)
    bias_off = flat.size
    flat = np.concatenate([flat, B.reshape(-1) if B is not None else np.zeros(cout, np.float32)])
    flat = np.array(flat, np.float32, order="C")     # our own (writable) copy
    gemm = not transpose and G == 1
    packed = _Packed(flat, kernel, W.shape, cin, cout, bias_off, np_, panel,
                     W if gemm else None, B if gemm else None)
    if gemm and W.ndim == 3 and cin == 1:
        # an STFT written as a Conv1d (Silero VAD): FFTs instead of the sums
        from ..kernels import dft
        match = dft.match_windowed_dft(W)
        if match is not None:
            packed.dft = dft.STFTConv(match, B)
    if gemm and panel:
        from ..kernels import winograd
        r = W.ndim - 2
        if winograd.eligible(W.shape, G, _ints(node, "strides") or [1] * r,
                             _ints(node, "dilations") or [1] * r) and \
                bool(np.all(np.abs(W) <= winograd.BIG)):
            # packed on first use, per tile size (``wino_weights``)
            packed.wino = {"src": (W, B, flat)}
    return packed


class ConvRunner:
    """Runs a Conv or ConvTranspose node on the kernels of ``fastlstm.kernels.conv``.

    Weights (and bias) that are constants are packed once, here; weights fed
    as graph inputs are packed on every call.  Per input shape the geometry is
    computed once and cached; a call then checks the input, allocates the
    output and makes one Numba call.

    Hooks for the executor:

    - ``runner.fuse_activation("Relu")`` (or ``"Sigmoid"``, or ``"Clip"``
      with ``bounds=(min, max)``) makes the runner
      apply that activation to its output, inside the kernel (returns True;
      False for another op or when one is already fused, and then nothing
      changes).  ``runner.fuse_relu = True/False`` switches Relu alone;
      ``runner.fused_activation`` says which is on.  The executor then drops
      the activation node and binds its output name to the Conv's output.
      ``runner.fused("Sigmoid")`` instead returns a new runner with the
      activation (weights shared), leaving this one as it was: for a
      specialised run while the general path still runs the activation node.
      ``runner.kernel_call(x)`` gives the kernel, weights and geometry for
      X's shape, for an executor that calls the kernel itself (a session's
      specialised runs do: they keep the activation the runner had when
      they were built).
      A fused Sigmoid computes as the elementwise Sigmoid's scalar form
      (``fastlstm.kernels.scalar.sigmoid``), a fused Clip as the op (x < min ?
      min : x, then > max ? max : x), so results are the same.  "SiLU" is
      x * sigmoid(x), PyTorch's nn.SiLU as its exporter writes it (a Sigmoid
      and a Mul).
    - ``runner.fused_pool(maxpool_node, x)`` returns a runner whose output is
      the MaxPool's of its (activated) output, when the pool's windows tile
      it (kernel = strides, no padding) and X's shape runs on a kernel that
      pools as it stores (Winograd's, the tap kernel's); the specialised run
      then drops the pool node.  CRNN text readers have a pool after every
      conv: unfused, each conv's output went to memory and the pool read it
      back.
    - ``runner.run1(x, out=None)`` returns Y for X without the dict and list
      of ``__call__`` (constant weights only); ``out`` reuses a buffer.

    Thread safety: the runner may be called from several threads at once (its
    per-shape state is replaced whole; scratch memory is per call).
    """

    def __init__(self, node, constants, needed, env):
        self.node = node
        self.n_out = len(node.outputs)
        self._x = node.input(0)
        self._wn, self._bn = node.input(1), node.input(2)
        self._act = 0           # fused activation, a kernels.conv.ACT_* code
        self._clip = None       # a fused Clip's (lo, hi), float32
        self._pool = None       # a fused MaxPool's (window rows, columns)
        self._plans = {}
        self._fast = (None,)    # see _prepare
        self._consts = constants    # the plan's constants (a fused Clip's bounds)
        w, b = constants.get(self._wn), constants.get(self._bn) if self._bn else None
        self._fixed = w is not None and (not self._bn or b is not None)
        self._packed = _pack(node, w, b) if self._fixed else None
        self._team = getattr(env, "team", None)     # the session's threads (None: one)

    # -- fusion hook
    _ACTS = {"Relu": 1, "Sigmoid": 2, "Clip": 3, "SiLU": 4}    # fastlstm.kernels.conv.ACT_*

    @property
    def fused_activation(self):
        """The activation applied to the output ("Relu", "Sigmoid", "Clip",
        "SiLU" or None)."""
        for name, code in self._ACTS.items():
            if code == self._act:
                return name
        return None

    @property
    def clip_bounds(self):
        """(lo, hi) of a fused Clip (float32), else None."""
        return self._clip if self._act == 3 else None

    @property
    def fuse_relu(self):
        """Whether Relu is applied to the output (set by the executor)."""
        return self._act == 1

    @fuse_relu.setter
    def fuse_relu(self, on):
        self._set_act(1 if on else 0)

    @staticmethod
    def _clip_pair(bounds):
        """Clip's (lo, hi) as float32, an absent (None) bound the float32 extreme
        (as the op takes it); None when ``bounds`` is not two numbers."""
        try:
            lo, hi = bounds
            f = np.finfo(np.float32)
            lo = np.float32(f.min if lo is None else lo)
            hi = np.float32(f.max if hi is None else hi)
        except (TypeError, ValueError):
            return None
        return lo, hi

    def clip_bounds_from(self, node):
        """(min, max) of Clip node ``node`` for ``fused("Clip", ...)`` (None for
        an absent bound): attributes before opset 11, then inputs that must be
        float32 constants of one element; None when they are not."""
        if node.op_type != "Clip":
            return None
        if node.since_version < 11:
            return attr(node, "min"), attr(node, "max")
        out = []
        for i in (1, 2):
            name = node.input(i) if len(node.inputs) > i else ""
            if not name:
                out.append(None)
                continue
            v = self._consts.get(name)
            if not isinstance(v, np.ndarray) or v.dtype != _F32 or v.size != 1:
                return None
            out.append(float(v.reshape(-1)[0]))
        return tuple(out)

    def fuse_activation(self, op_type, bounds=None):
        """Apply activation ``op_type`` ("Relu", "Sigmoid", or "Clip" with
        ``bounds`` = (min, max), None for an absent one) to the output from
        the next call on.  Returns False, changing nothing, for another op,
        a Clip without bounds, or when an activation is already fused (the
        two would not compose)."""
        code = self._ACTS.get(op_type)
        clip = self._clip_pair(bounds) if code == 3 else None
        if code is None or self._act != 0 or (code == 3 and clip is None):
            return False
        self._set_act(code, clip)
        return True

    def fused(self, op_type, bounds=None):
        """A new runner for this node that applies ``op_type`` ("Relu",
        "Sigmoid", or "Clip" with ``bounds`` as for ``fuse_activation``) to its
        output, sharing the packed weights; None if it cannot.  Unlike
        ``fuse_activation`` this runner is left unchanged, so a path that
        still runs the activation node keeps its results (Sigmoid is not
        idempotent as Relu is)."""
        code = self._ACTS.get(op_type)
        clip = self._clip_pair(bounds) if code == 3 else None
        if code is None or self._act != 0 or (code == 3 and clip is None) or self._pool:
            return None
        new = copy.copy(self)
        new._plans = {}
        new._set_act(code, clip)
        return new

    def fused_pool(self, node, x=None):
        """A new runner for this node whose output is that of MaxPool node
        ``node`` applied to its output (after its activation), sharing the
        packed weights; None unless the pool's windows tile the output:
        2-D, kernel_shape = strides, no padding, no dilation, no ceil_mode,
        no Indices.  The Winograd kernels pool as they store, while the
        tile's outputs are in cache; the others write the Conv's output,
        then ``kernels.conv.epilogue`` pools it, which is slower than the
        pool's own kernel: with an input ``x``, None unless X's shape runs
        on Winograd."""
        if (node.op_type != "MaxPool" or len(node.outputs) != 1 or not node.outputs[0]
                or self._pool or self.node.op_type != "Conv"
                or self._packed is None or len(self._packed.wshape) != 4):
            return None
        ks = _ints(node, "kernel_shape")
        strides = _ints(node, "strides") or [1, 1]
        dil = _ints(node, "dilations") or [1]
        if (ks is None or len(ks) != 2 or list(strides) != list(ks) or min(ks) < 1
                or any(_ints(node, "pads") or [0]) or any(d != 1 for d in dil)
                or attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                or attr(node, "ceil_mode", 0)):
            return None
        new = copy.copy(self)
        new._plans = {}
        new._fast = (None,)
        new._pool = (int(ks[0]), int(ks[1]))
        if x is not None:
            try:
                kern = new._prepare(x, None)[3]
            except FastLSTMError:
                return None
            if getattr(kern, "epilogue", False):
                return None
        return new

    def _set_act(self, code, clip=None):
        self._act = code
        self._clip = clip
        self._plans.clear()
        self._fast = (None,)

    # -- per shape
    def _plan(self, x, packed):
        """(geo, output shape, kernel, kind) for input x."""
        K = _kernels()
        if not self._pool and self._act != K.ACT_SILU:
            return self._plan_act(x, packed, self._act)
        # a fused MaxPool or SiLU: the Winograd kernels compute them, the
        # others run without the activation, then the epilogue does both
        geo, shape, kern, kind = self._plan_act(x, packed, 0)
        pool = self._pool or (0, 0)
        out = shape if not self._pool else \
            (shape[0], shape[1], shape[2] // pool[0], shape[3] // pool[1])
        full = geo.copy()
        full[K.G_ACT] = self._act
        if self._act == K.ACT_CLIP:
            full[K.G_CLIP] = _clip_field(self._clip)
        full[K.G_POOLH], full[K.G_POOLW] = pool
        if type(kind) is tuple and kind[0] == "wino" and \
                kind[1] % max(pool[0], 1) == 0 and kind[1] % max(pool[1], 1) == 0:
            return full, out, kern, kind
        from ..kernels.conv_taps import TapsConv
        if isinstance(kern, TapsConv):          # built again with both
            return full, out, _taps_kernel(geo, self._act, self._pool), kind
        size = int(np.prod(shape))
        epilogue = K.kernel("epilogue")

        def then_epilogue(xf, w, _geo, yf):
            t = np.empty(size, _F32)
            kern(xf, w, geo, t)
            epilogue(t, full, yf)
        then_epilogue.epilogue = True
        return full, out, then_epilogue, kind

    def _plan_act(self, x, packed, act):
        """``_plan`` with activation ``act`` (a kernels.conv.ACT_* code other
        than ACT_SILU) and no pool."""
        node = self.node
        K = _kernels()
        if not isinstance(x, np.ndarray):
            raise _bad_input(node, f"input X must be a numpy.ndarray, not {type(x).__name__}")
        if x.dtype != _F32:
            raise _bad_input(node, f"input X has dtype {x.dtype}, expected float32")
        r = len(packed.wshape) - 2
        if x.ndim != r + 2:
            raise _bad_input(node, f"input X has shape {list(x.shape)} (rank {x.ndim}); W "
                                   f"{list(packed.wshape)} needs rank {r + 2}")
        if x.shape[1] != packed.cin:
            raise _bad_input(node, f"input X has {x.shape[1]} channels; W "
                                   f"{list(packed.wshape)} with group "
                                   f"{attr(node, 'group', 1)} expects {packed.cin}")
        N, insz, ks = x.shape[0], list(x.shape[2:]), list(packed.wshape[2:])
        strides = _ints(node, "strides") or [1] * r
        dil = _ints(node, "dilations") or [1] * r
        pads = _ints(node, "pads") or [0] * (2 * r)
        for name, v, n in (("strides", strides, r), ("dilations", dil, r), ("pads", pads, 2 * r)):
            if len(v) != n:
                raise _bad_input(node, f"{name} {v} must have {n} values for input "
                                       f"{list(x.shape)}")
        G = int(attr(node, "group", 1))
        _recheck(node, strides, dil, pads, G)
        extra = {K.G_BIAS: packed.bias_off, K.G_ACT: act, K.G_NP: packed.np_}
        if act == K.ACT_CLIP:
            extra[K.G_CLIP] = _clip_field(self._clip)
        if node.op_type == "ConvTranspose":
            outsz, pb, pe = _transpose_out(node, insz, ks, strides, dil, pads)
        else:
            outsz, pb, pe = _out_and_pads(node, insz, ks, strides, dil, pads)
            padcopy = any(pb) or any(pe)
            extra[K.G_PADCOPY] = int(padcopy)
            for i, k in enumerate((K.G_QD, K.G_QH, K.G_QW)):
                extra[k] = _pad3(pe, 0)[i]
        # what the attributes make the kernel allocate, against the size limit
        limits.check_shape((N, packed.cout, *outsz), _F32, node)
        if node.op_type == "Conv" and extra[K.G_PADCOPY]:
            limits.check_shape([packed.cin] + [a + b + c for a, b, c in zip(insz, pb, pe)],
                               _F32, node, "the padded input")
        geo = _geo(N, G, packed.cin, packed.cout, insz, outsz, ks, strides, dil, pb, pe, extra)
        if (packed.dft is not None and act == 0 and not extra[K.G_PADCOPY]
                and dil == [1] and GEMM is None and ROWS is None):
            # (no fused activation, no padding, no dilation: the FFT's case;
            # a kernel forced on or off for a benchmark runs instead)
            return (geo, (N, packed.cout, *outsz), packed.dft, "dft")
        if packed.wino is not None and len(packed.wshape) == 3 and _use_wino1(geo):
            geo[K.G_BIAS] = packed.wino_weights(4)[1]
            from ..kernels import winograd
            return (geo, (N, packed.cout, *outsz), K.compiled(winograd.conv_wino1),
                    ("wino1", 4))
        tile = _use_wino(geo) if packed.wino is not None else 0
        if tile:
            geo[K.G_BIAS] = packed.wino_weights(tile)[1]
            from ..kernels import winograd
            fn = winograd.conv_wino if tile == 2 else winograd.conv_wino4
            fn = K.compiled(fn)
            if self._team is not None and _split_wino(geo, tile, self._team.size):
                fn = _TeamWino(fn, tile, self._team)
            return (geo, (N, packed.cout, *outsz), fn, ("wino", tile))
        if node.op_type == "Conv" and packed.can_rows() and _use_taps(geo):
            geo[K.G_BIAS] = packed.rows_weights()[1]
            return (geo, (N, packed.cout, *outsz), _taps_kernel(geo, act), "rows")
        if node.op_type == "Conv" and packed.can_rows() and _use_lanes(geo, act):
            geo[K.G_BIAS] = packed.lanes_weights()[1]
            return (geo, (N, packed.cout, *outsz), _lanes_kernel(geo, act), "lanes")
        if node.op_type == "Conv" and packed.can_rows() and _use_rows(geo):
            geo[K.G_BIAS] = packed.rows_weights()[1]
            return (geo, (N, packed.cout, *outsz), K.kernel("conv_rows"), "rows")
        if (packed.gemm is not None or packed._W is not None) and _use_items(geo):
            geo[K.G_BIAS] = packed.gemm_weights()[1]
            return (geo, (N, packed.cout, *outsz), K.kernel("conv_items"), True)
        if (packed.gemm is not None or packed._W is not None) and _use_gemm(geo):
            geo[K.G_BIAS] = packed.gemm_weights()[1]
            return (geo, (N, packed.cout, *outsz), K.kernel("conv_gemm"), True)
        return (geo, (N, packed.cout, *outsz), packed.kernel, False)

    def _prepare(self, x, values):
        """The fast path's tuple (input shape, geo, output shape, kernel,
        packed weights) for input ``x``, packing fed weights.  Kept as one
        tuple, replaced whole, so that threads sharing the runner never mix
        the fields of two shapes."""
        packed = self._packed
        if packed is None:      # weights fed as inputs: pack them for this call
            if values is None:
                raise _bad_input(self.node, "run1 needs constant weights")
            packed = _pack(self.node, values[self._wn],
                           values[self._bn] if self._bn else None)
        shape = getattr(x, "shape", None)
        key = (shape, packed.wshape)
        plan = self._plans.get(key)
        if plan is None or type(x) is not np.ndarray or x.dtype is not _F32:
            plan = self._plan(x, packed)
            if len(self._plans) >= 16:
                self._plans.clear()
            self._plans[key] = plan
        wts = (packed.rows_weights()[0] if plan[3] == "rows" else
               packed.lanes_weights()[0] if plan[3] == "lanes" else
               packed.wino_weights(plan[3][1])[0] if type(plan[3]) is tuple else
               packed.w if plan[3] == "dft" else
               packed.gemm_weights()[0] if plan[3] else packed.w)
        fast = (shape,) + plan[:3] + (wts,)
        if self._packed is not None:    # constant weights: the next call may skip this
            self._fast = fast
        return fast

    def __call__(self, values, ctx=None):
        """Run the node: ``values`` maps input names to arrays; returns [Y]."""
        x = values[self._x]
        f = self._fast
        if type(x) is not np.ndarray or x.shape != f[0] or x.dtype is not _F32:
            f = self._prepare(x, values)
        y = np.empty(f[2], _F32)
        xf = x.ravel()
        try:
            f[3](xf, f[4], f[1], y.ravel())
        except TypeError:       # a read-only X: the kernels take writable arrays
            f[3](xf.copy(), f[4], f[1], y.ravel())
        return [y]

    def kernel_call(self, x):
        """(kernel, weights, geo, output shape) that compute Y for inputs of
        ``x``'s shape and dtype as ``kernel(X.reshape(-1), weights, geo,
        Y.reshape(-1))`` with Y new (X writable), for an executor that calls
        the kernel itself; None for weights fed as inputs."""
        if self._packed is None:
            return None
        f = self._prepare(x, None)
        return f[3], f[4], f[1], f[2]

    def run1(self, x, out=None):
        """Y for input X alone (constant weights only): the call without the
        dict and the list, for an executor that calls the runner directly.
        ``out``: a float32 C-contiguous array of Y's shape to write Y into
        (an executor's reused buffer; it must not be X), else Y is new."""
        f = self._fast
        if type(x) is not np.ndarray or x.shape != f[0] or x.dtype is not _F32:
            f = self._prepare(x, None)
        if out is None:
            y = np.empty(f[2], _F32)
        else:
            y = out
            if type(y) is not np.ndarray or y.shape != f[2] or y.dtype is not _F32 or \
                    not y.flags.c_contiguous or not y.flags.writeable or \
                    np.may_share_memory(x, y):
                raise _bad_input(self.node, f"out must be a writable C-contiguous float32 "
                                            f"array of shape {list(f[2])}, apart from X")
        xf = x.ravel()
        try:
            f[3](xf, f[4], f[1], y.ravel())
        except TypeError:
            f[3](xf.copy(), f[4], f[1], y.ravel())
        return y


#: Conv through the panel GEMM (``kernels.conv.conv_gemm``): None chooses per
#: shape (``_use_gemm``), True / False force it on / off wherever it applies
#: (group 1) for the shapes planned from then on (tests, benchmarks).
GEMM = None


def _use_gemm(geo):
    """Whether ``conv_gemm`` runs the group-1 Conv of geometry ``geo`` (else
    the panel or direct kernel), by the measurements in
    benchmarks/conv_speed.py."""
    if GEMM is not None:
        return GEMM
    K = _kernels()
    N, COUT, OD, OH, OW = (int(geo[i]) for i in (K.G_N, K.G_COUT, K.G_OD, K.G_OH, K.G_OW))
    rows = N * OD * OH * OW
    if 2 * COUT < K.NC:
        # the direct kernel's shapes (a one-channel head): it vectorizes along
        # the output columns, the GEMM along 16 output channels; with few
        # columns the GEMM wins (Silero's decoder, when it ran here: 1.2-1.5x
        # at batch 1, 7x at batch 293; up to 8 columns ``conv_items`` runs
        # first, see _use_items)
        return OW < 16
    # the panel kernel tiles the positions of one output row 4 at a time: with
    # rows of 1, 2 or 5 positions most of its tile is idle, where the GEMM's
    # tiles take 6 rows across output rows and batch items (Silero's encoder
    # at batch 293: 1.3-1.8x); with full tiles the panel kernel, which reads X
    # without copying rows, is as fast or faster (0.85-1.0x)
    used = OW / (4 * -(-OW // 4))
    return used < 0.75 and rows >= 6


#: 1-D Conv through ``kernels.conv.conv_items`` (a product per output
#: position, rows the batch items): None chooses per shape (``_use_items``),
#: True / False force it on / off wherever it applies.
ITEMS = None


def _use_items(geo):
    """Whether ``conv_items`` runs the group-1 Conv of geometry ``geo``: a
    1-D conv of at most 8 output positions per item, where the panel kernel
    streams W once per item and ``conv_gemm`` copies every row with its
    padding taps (Silero's encoder in a StreamPool batch).  It runs at every
    batch size, one item included, so that a stream's result does not depend
    on the batch it ran in (each output is the same sum whatever the number
    of items).  At one item it is about as fast as the panel kernel
    (Silero's encoder convs 2-4, ``python benchmarks/conv_speed.py``: 4.9,
    2.6, 2.8 us against 4.0, 2.6, 3.2)."""
    K = _kernels()
    if not K.items_eligible(geo):
        return False
    if ITEMS is not None:
        return ITEMS
    if GEMM is not None or ROWS or TAPS:        # another kernel forced
        return False
    # (an output of fewer than 8 channels too: Silero's decoder, 128 -> 1
    # channel over one position, ``python benchmarks/conv_speed.py --batch
    # 128``: 13 us against the GEMM's 62; at one item 2.0 against 2.4)
    return int(geo[K.G_OW]) <= 8


#: Conv through ``kernels.conv.conv_rows``: None chooses per shape
#: (``_use_rows``), True / False force it on / off wherever it applies.
ROWS = None


#: Conv with unrolled taps (``kernels.conv_taps``): None chooses per shape,
#: True / False force it on / off where it applies (tests, benchmarks).
TAPS = None
_TAPS_KERNELS = {}


#: Conv by Winograd's F(m x m, 3x3) (``kernels.winograd``): None chooses per
#: shape (``_use_wino``), 2 or 4 force that tile size, 0 forces it off, where
#: it applies.
WINO = None


def _use_wino(geo):
    """The output tile size with which ``kernels.winograd`` runs the Conv of
    geometry ``geo`` (its weights allow it: a 3x3 kernel, stride 1, no
    dilation, group 1), 0 for another kernel.  F(4x4, 3x3) spends 2.25
    multiply-adds per output and input channel, F(2x2, 3x3) 4, the panel
    kernel 9, plus transforms that cost about a pass over X and Y, and
    weights 4x (2x2: 1.8x) the panel kernel's, read once per call: with at
    least 16 input and output channels and 16 tiles per item (F(4x4): 6)
    the products make up for it.  Measured on CRNN's convs, ``python
    benchmarks/conv_speed.py --wino`` (weights and X evicted from cache
    before every call): F(4x4) 1.1-1.5x onnxruntime, F(2x2) 0.9-1.2x, the
    panel kernel 0.8-1.1x.  F(4x4) down to 6 tiles: at width 100 the CRNN's
    third conv (8 x 25 outputs, 14 tiles) and fourth (4 x 25, 7 tiles, its
    4 x 1 MaxPool then fused into the stores) ran on F(2x2) before; in the
    whole graph, weights in cache as between a reader's calls, the CRNN
    ran at 1.41x and 1.49x onnxruntime against 1.29x and 1.30x (interleaved
    rounds, two runs).  With caches flushed before each conv (``--wino``,
    four runs) the third was within noise on the two sizes and the fourth
    faster on F(2x2) in three runs of four: what a graph whose weights leave
    the cache between calls would see."""
    K = _kernels()
    if WINO is not None:
        return WINO
    if GEMM or ROWS or TAPS:        # another kernel forced on
        return 0
    CIN, COUT, OD, OH, OW = (int(geo[i]) for i in (K.G_CIN, K.G_COUT, K.G_OD, K.G_OH, K.G_OW))
    if OD != 1 or CIN < 16 or COUT < 16:
        return 0
    if OH >= 4 and OW >= 4 and -(-OH // 4) * -(-OW // 4) >= 6:
        return 4
    return 2 if OH >= 2 and OW >= 2 and -(-OH // 2) * -(-OW // 2) >= 16 else 0


def _split_wino(geo, tile, threads):
    """Whether a Winograd conv (output tiles ``tile`` x ``tile``) is split
    over a session's ``threads`` (``_TeamWino``): with more than one, when
    every thread gets at least 6 tiles of each item.  Each thread streams
    all of the transformed weights for its tiles, so few tiles a thread do
    not pay.  ``python benchmarks/conv_speed.py --wino --threads 2 --rounds
    15`` (the CRNN's convs; one thread's time over the split's, three runs
    on the shared 2-core VM, the third in a phase where the second core
    was slow): 52 tiles 1.36x, 1.41x, 0.87x; 14 tiles 1.15x, 1.23x, 0.76x;
    7 tiles 1.00x, 1.10x, 1.03x; at width 400, 200 tiles 1.34x, 1.73x,
    0.95x; 50 tiles 1.08x, 1.58x, 0.97x; 25 tiles 0.85x, 1.62x, 1.21x."""
    K = _kernels()
    if threads < 2 or (WINO_THREADS is not None and not WINO_THREADS):
        return False
    tiles = -(-int(geo[K.G_OH]) // tile) * -(-int(geo[K.G_OW]) // tile)
    return WINO_THREADS or tiles >= 6 * threads


#: Split Winograd convs over a session's threads (``_split_wino``): None
#: chooses by shape, False never, True always (with more than one thread).
WINO_THREADS = None


class _TeamWino:
    """A Winograd conv kernel's call ``(x, w, geo, y)`` run by a session's
    thread team: each thread computes a range of every item's output tiles
    (``kernels.winograd.wino_task``), into disjoint parts of Y.  Each output
    is the same sums as on one thread, so results do not depend on the
    thread count."""

    def __init__(self, fn, tile, team):
        from ..kernels import winograd
        self.fn, self.tile, self.team = fn, tile, team
        self.task = winograd.wino_task()
        self.__name__ = fn.__name__ + "_team"

    def __call__(self, x, w, geo, y):
        for a in (x, w, y):
            if a.dtype != _F32 or not a.flags.c_contiguous or a.ndim != 1:
                return self.fn(x, w, geo, y)    # (raises the kernel's TypeError)
        if not y.flags.writeable or geo.dtype != np.int64 or not geo.flags.c_contiguous:
            return self.fn(x, w, geo, y)
        args = np.array([x.ctypes.data, x.size, w.ctypes.data, w.size, geo.ctypes.data,
                         geo.size, y.ctypes.data, y.size, self.tile], np.int64)
        self.team.run_task(self.task, args.ctypes.data)


def _use_wino1(geo):
    """Whether ``kernels.winograd.conv_wino1`` (F(4, 3)) runs the 1-D Conv of
    geometry ``geo`` (kernel 3, stride 1, no dilation, group 1: its weights
    allow it): at least 16 input and output channels, output positions a
    multiple of 4.  Silero's first encoder conv (129 -> 128 channels over 4
    frames), ``python benchmarks/conv_speed.py --batch 128``: 426 us against
    conv_items' 640 and the panel kernel's 776 (8 kHz: 240, 453, 476); at
    one item (no ``--batch``) 9.3 against the panel kernel's 7.9.  It runs
    at every batch size, one item included, so that a stream's result is
    the same alone and in a StreamPool batch (F(4, 3) rounds differently
    from a direct sum: about 1e-6 of the output's scale; with the panel
    kernel at one item, Silero's probability moved by up to 2e-6 between a
    stream alone and in the pool)."""
    if WINO is not None:
        return WINO == 4
    if GEMM or ROWS or TAPS or ITEMS:        # another kernel forced on
        return False
    K = _kernels()
    CIN, COUT, OW = (int(geo[i]) for i in (K.G_CIN, K.G_COUT, K.G_OW))
    return (CIN >= 16 and COUT >= 16 and OW % 4 == 0 and int(geo[K.G_H]) == 1
            and int(geo[K.G_D]) == 1)


def _use_taps(geo):
    """Whether ``kernels.conv_taps`` runs the Conv of geometry ``geo``: one
    input channel per group and at most 25 taps (the CRNN's first conv,
    1 -> 32 channels 3x3 on [32, 100] with its Relu, a whole session run:
    59 us against 170 with conv_rows; a depthwise 3x3 over 32 x [16, 50]:
    46 against 133; interleaved medians)."""
    from ..kernels import conv_taps
    if TAPS is not None:
        return TAPS and conv_taps.eligible(geo)
    if GEMM or ROWS:        # another kernel forced on
        return False
    return conv_taps.eligible(geo)


#: Conv with output channels across vector lanes (``kernels.conv_lanes``):
#: None chooses per shape (``_use_lanes``), True / False force it on / off
#: where it applies (tests, benchmarks).
LANES = None
_LANES_KERNELS = {}


def _use_lanes(geo, act):
    """Whether ``kernels.conv_lanes`` runs the Conv of geometry ``geo`` with
    fused activation ``act`` (None, Relu or Clip; the others follow as a
    pass): a 2-D conv that ``conv_rows`` would run (few output channels, or
    one input channel), output channels a multiple of 8.  Measured (one-node
    models, interleaved medians, us per call, lanes against conv_rows): the
    speech model's 1 -> 8 channels 11x5 stride 2x2 112 against 200, its
    8 -> 8 stride 2x1 375 against 438; 4 -> 8 3x3 30 against 35; 1 -> 32
    3x3 stride 2 53 against 170.  A 1-D conv (16 -> 8, kernel 5, 400
    positions) stays with conv_rows: 11 against 18."""
    from ..kernels import conv_lanes
    if not conv_lanes.eligible(geo) or act not in conv_lanes.ACTS:
        return False
    if LANES is not None:
        return LANES
    if GEMM or ROWS is not None or TAPS:        # another kernel forced
        return False
    K = _kernels()
    return int(geo[K.G_OH]) >= 2 and _use_rows(geo)


def _lanes_kernel(geo, act):
    from ..kernels import conv_lanes
    K = _kernels()
    key = tuple(int(geo[i]) for i in (K.G_KH, K.G_KW, K.G_SW, K.G_DW)) + (act,)
    k = _LANES_KERNELS.get(key)
    if k is None:
        k = _LANES_KERNELS[key] = conv_lanes.LanesConv(*key)
    return k


def _clip_field(clip):
    """A fused Clip's two float32 bounds in the bits of one int64 (geo[G_CLIP])."""
    return int(np.array(clip, np.float32).view(np.int64)[0])


def _taps_kernel(geo, act, pool=None):
    from ..kernels import conv_taps
    K = _kernels()
    key = (int(geo[K.G_KH]), int(geo[K.G_KW]), act, pool)
    k = _TAPS_KERNELS.get(key)
    if k is None:
        k = _TAPS_KERNELS[key] = conv_taps.TapsConv(*key)
    return k


def _use_rows(geo):
    """Whether ``conv_rows`` (vectors along output columns) runs the Conv of
    geometry ``geo``: rows of at least NC output columns, unit dilation along
    W when its stride is not 1, and few output channels per group or one
    input channel (measured in benchmarks/conv_speed.py --rows)."""
    K = _kernels()
    CGI, CGO, OW, SW, DW = (int(geo[i]) for i in (K.G_CGI, K.G_CGO, K.G_OW, K.G_SW, K.G_DW))
    if SW > 1 and DW > 1:
        return False
    if ROWS is not None:
        return ROWS
    if GEMM:            # forced on
        return False
    if SW > 4:          # a tile call per phase, each over a few taps (an STFT's
        return False    # windows: the GEMM reads them in place)
    # fewer than 4 output channels per group (depthwise, a one-channel head):
    # the direct kernel's rows beat a tile of 1-3 channels (--rows, fastest
    # rounds: dw 99 us against 168, head 8.5 against 17); up to 8 the panel
    # kernel's 16-channel panels are half empty (speech2 413 against 766,
    # speech1 279 against 447), with one input channel its tile's sum is a
    # few taps (crnn1 147 against 238)
    return OW >= K.NC and CGO >= 4 and (CGO <= 8 or CGI == 1)


def _recheck(node, strides, dil, pads, G):
    """The attribute bounds the kernels' indexing relies on (checked at import
    too; again here for graphs that did not come through the importer)."""
    if min(strides) < 1 or min(dil) < 1 or min(pads, default=0) < 0 or G < 1:
        raise InvalidModel(f"{node.describe()}: strides {strides}, dilations {dil} must be "
                           f">= 1, pads {pads} >= 0, group {G} >= 1")


def _transpose_out(node, insz, ks, strides, dil, pads):
    """ConvTranspose output sizes and (begin, end) pads per spatial axis."""
    r = len(insz)
    auto = attr(node, "auto_pad", "NOTSET")
    opad = _ints(node, "output_padding") or [0] * r
    oshape = _ints(node, "output_shape")
    if len(opad) != r:
        raise _bad_input(node, f"output_padding {opad} must have {r} values")
    if oshape is not None:
        if len(oshape) == r + 2:
            oshape = oshape[2:]
        if len(oshape) != r:
            raise _bad_input(node, f"output_shape {oshape} must have {r} values")
    out, pb, pe = [], [], []
    for i in range(r):
        ek = (ks[i] - 1) * dil[i] + 1
        full = strides[i] * (insz[i] - 1) + opad[i] + ek
        if oshape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
            o = oshape[i] if oshape is not None else insz[i] * strides[i]
            total = max(0, full - o)
            if auto == "SAME_UPPER":
                b = total // 2
            else:
                b = total - total // 2
            e = total - b
        elif auto == "VALID":
            b = e = 0
            o = full
        else:
            b, e = pads[i], pads[i + r]
            o = full - b - e
        if o < 1:
            raise _bad_input(node, f"output size {o} on spatial axis {i} (input {insz[i]}, "
                                   f"kernel extent {ek}, pads {b}+{e})")
        out.append(o)
        pb.append(b)
        pe.append(e)
    return out, pb, pe


def _run_conv(node, ins):
    """Run a Conv/ConvTranspose node on loose arrays (constant folding)."""
    runner = ConvRunner(_NodeView(node), {}, (), None)
    return runner({"x": ins[0], "w": ins[1], "b": ins[2] if len(ins) > 2 else None})


class _NodeView:
    """The node with its inputs renamed x, w, b."""
    inputs = ("x", "w", "b")

    def __init__(self, node):
        self._node = node

    def __getattr__(self, name):
        return getattr(self._node, name)

    def input(self, i):
        return self.inputs[i]


_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@op("Conv", since=1, attrs=_CONV_ATTRS, inputs=(2, 3), runner=ConvRunner)
def conv(node, ins, n):
    """Convolution (1 to 3 spatial axes, groups, dilations, padding, auto_pad)."""
    return _run_conv(node, ins)


@op("ConvTranspose", since=1, attrs=_CONV_ATTRS + ("output_padding", "output_shape"),
    inputs=(2, 3), runner=ConvRunner)
def conv_transpose(node, ins, n):
    """Transposed convolution (output_padding, output_shape, auto_pad, groups)."""
    return _run_conv(node, ins)


def _build_conv(node, ctx):
    _check_conv(node, ctx)
    return node


def _build_pool(node, ctx):
    _check_common(node, ctx, pool=True)
    return node


def _build_global(node, ctx):
    ctx.require_float(node, node.input(0), "X")
    return node


# validation at import (``fastlstm.onnx_import.basic`` calls ``fn.build``)
conv.build = conv_transpose.build = _build_conv


# ---- pools --------------------------------------------------------------------------

def _writable(a):
    """``a``, or a copy when it is read-only (the kernels take writable arrays)."""
    return a if a.flags.writeable else a.copy()


def _pool_x(node, x):
    if not isinstance(x, np.ndarray):
        raise _bad_input(node, f"input X must be a numpy.ndarray, not {type(x).__name__}")
    if x.dtype != _F32:
        raise _unsupported(node, f"input X has dtype {x.dtype}; fastlstm pools float32")
    return x


def _pool_geo(node, x, dilated, ceil):
    K = _kernels()
    ks = _ints(node, "kernel_shape")
    r = len(ks)
    if x.ndim != r + 2:
        raise _bad_input(node, f"input X has shape {list(x.shape)}; kernel_shape {ks} needs "
                               f"rank {r + 2}")
    strides = _ints(node, "strides") or [1] * r
    dil = (_ints(node, "dilations") if dilated else None) or [1] * r
    pads = _ints(node, "pads") or [0] * (2 * r)
    insz = list(x.shape[2:])
    _recheck(node, strides, dil, pads, 1)
    if len(strides) != r or len(dil) != r or len(pads) != 2 * r or min(ks) < 1:
        raise InvalidModel(f"{node.describe()}: strides, dilations, pads do not match "
                           f"kernel_shape {ks}")
    outsz, pb, pe = _out_and_pads(node, insz, ks, strides, dil, pads,
                                  ceil and bool(attr(node, "ceil_mode", 0)))
    for i in range(r):
        if pb[i] >= (ks[i] - 1) * dil[i] + 1 or pe[i] >= (ks[i] - 1) * dil[i] + 1:
            raise _bad_input(node, f"pads {pb[i]}, {pe[i]} on spatial axis {i} are not "
                                   f"smaller than the kernel's extent")
    limits.check_shape((x.shape[0], x.shape[1], *outsz), np.int64, node)
    NCp = x.shape[0] * x.shape[1]
    geo = _geo(NCp, 1, 1, 1, insz, outsz, ks, strides, dil, pb, pe,
               {K.G_QD: _pad3(pe, 0)[0], K.G_QH: _pad3(pe, 0)[1], K.G_QW: _pad3(pe, 0)[2]})
    return geo, (x.shape[0], x.shape[1], *outsz)


def _pool_kernels():
    from ..kernels import pool
    return pool


def _pool_plan(node, x, is_max):
    """(geo, output shape, kernel) of a pool node for input x."""
    K = _kernels()
    since = node.since_version
    if is_max:
        dilated, ceil = since >= 10, since >= 10
    else:
        dilated, ceil = since >= 19, since >= 10
    geo, shape = _pool_geo(node, x, dilated, ceil)
    geo[K.G_COUNT_PAD] = int(attr(node, "storage_order" if is_max else "count_include_pad", 0))
    return geo, shape, _pool_kernels().kernel("max_pool" if is_max else "avg_pool")


def _max_pool(node, ins, n):
    x = _pool_x(node, ins[0])
    geo, shape, kern = _pool_plan(node, x, True)
    y = np.empty(shape, _F32)
    idx = np.empty(shape if n > 1 else 0, np.int64)
    kern(_writable(x.ravel()), geo, y.ravel(), idx.ravel())
    return [y, idx][:n]


_NO_IDX = np.empty(0, np.int64)


def _bind_pool(node, consts, rec):
    """For the specialised executor: the geometry worked out once for the
    recorded input shape (a Python plan per call costs more than CRNN's
    pooling itself); another shape takes the general path."""
    x0 = rec.get(node.inputs[0])
    if len(node.outputs) != 1 or not isinstance(x0, np.ndarray) or x0.dtype != _F32:
        return None
    is_max = node.op_type == "MaxPool"
    geo, shape, kern = _pool_plan(node, x0, is_max)
    xshape = x0.shape
    fn = _max_pool if is_max else _avg_pool

    def into(x, y):
        """The output written into ``y`` (C-contiguous, of the output's shape:
        a buffer the executor keeps between runs; a fresh array of pool
        output each run cost page faults at CRNN's sizes)."""
        if type(x) is not np.ndarray or x.shape != xshape or x.dtype is not _F32:
            y[...] = fn(node, [x], 1)[0]
            return y
        xf = x.ravel()
        if not xf.flags.writeable:
            xf = xf.copy()
        if is_max:
            kern(xf, geo, y.reshape(-1), _NO_IDX)
        else:
            kern(xf, geo, y.reshape(-1))
        return y

    def run(x):
        return into(x, np.empty(shape, _F32))
    run.into = into
    return run


_POOL = ("auto_pad", "kernel_shape", "pads", "strides")


@op("MaxPool", since=1, attrs=_POOL, bind=_bind_pool)
def max_pool_1(node, ins, n):
    """Max over sliding windows (padding never wins)."""
    return _max_pool(node, ins, n)


@op("MaxPool", since=8, attrs=_POOL + ("storage_order",), outputs=(1, 2))
def max_pool_8(node, ins, n):
    """Max over sliding windows, with the optional Indices output."""
    return _max_pool(node, ins, n)


@op("MaxPool", since=10, attrs=_POOL + ("storage_order", "ceil_mode", "dilations"),
    outputs=(1, 2))
def max_pool_10(node, ins, n):
    """Max over sliding windows (ceil_mode, dilations, Indices)."""
    return _max_pool(node, ins, n)


def _avg_pool(node, ins, n):
    x = _pool_x(node, ins[0])
    geo, shape, kern = _pool_plan(node, x, False)
    y = np.empty(shape, _F32)
    kern(_writable(x.ravel()), geo, y.ravel())
    return [y]


@op("AveragePool", since=1, attrs=_POOL, bind=_bind_pool)
def avg_pool_1(node, ins, n):
    """Mean over sliding windows, padding not counted."""
    return _avg_pool(node, ins, n)


@op("AveragePool", since=7, attrs=_POOL + ("count_include_pad",))
def avg_pool_7(node, ins, n):
    """Mean over sliding windows (count_include_pad)."""
    return _avg_pool(node, ins, n)


@op("AveragePool", since=10, attrs=_POOL + ("count_include_pad", "ceil_mode"))
def avg_pool_10(node, ins, n):
    """Mean over sliding windows (count_include_pad, ceil_mode)."""
    return _avg_pool(node, ins, n)


@op("AveragePool", since=19, attrs=_POOL + ("count_include_pad", "ceil_mode", "dilations"))
def avg_pool_19(node, ins, n):
    """Mean over sliding windows (count_include_pad, ceil_mode, dilations)."""
    return _avg_pool(node, ins, n)


for _f in (max_pool_1, max_pool_8, max_pool_10, avg_pool_1, avg_pool_7, avg_pool_10,
           avg_pool_19):
    _f.build = _build_pool


def _global(node, ins, fn):
    x = _pool_x(node, ins[0])
    if x.ndim < 2:
        raise _bad_input(node, f"input X has rank {x.ndim}; expected [N, C, ...]")
    axes = tuple(range(2, x.ndim))
    if not axes:
        return [x.copy()]
    if any(x.shape[a] == 0 for a in axes):
        raise _bad_input(node, f"input X has an empty spatial axis ({list(x.shape)})")
    return [fn(x, axis=axes, keepdims=True).astype(_F32, copy=False)]


@op("GlobalAveragePool", since=1)
def global_average_pool(node, ins, n):
    """Mean over all spatial axes (kept as size 1)."""
    return _global(node, ins, np.mean)


@op("GlobalMaxPool", since=1)
def global_max_pool(node, ins, n):
    """Max over all spatial axes (kept as size 1)."""
    return _global(node, ins, np.max)


global_average_pool.build = global_max_pool.build = _build_global
