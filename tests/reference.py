"""Plain numpy references for the ONNX recurrent operators.

Written straight from the operator documentation (``onnx.defs.get_schema(op).doc``)
in float64, with no attempt at speed.  ``test_reference.py`` checks these against
``onnx.reference.ReferenceEvaluator`` (default attributes, both layouts) and
against onnxruntime on every layout-0 case they cover (clip, flags, activations
with alpha/beta, lengths), so the kernels are never checked against a
reference that is itself unchecked.
"""
import numpy as np

# The ONNX text gives no defaults for these parameters inside recurrent ops;
# these are the ones onnxruntime applies (test_kernels.py,
# test_each_activation_against_onnxruntime, measures them).
_DEFAULT_ALPHA = {"LeakyRelu": 0.01, "ThresholdedRelu": 0.0, "ScaledTanh": 0.0,
                  "HardSigmoid": 0.2, "Elu": 1.0, "Affine": 0.0}
_DEFAULT_BETA = {"ScaledTanh": 0.0, "HardSigmoid": 0.5, "Affine": 0.0}


def activation(name, alpha=None, beta=None):
    """Return a float64 numpy function for an ONNX recurrent activation name."""
    a = _DEFAULT_ALPHA.get(name) if alpha is None else alpha
    b = _DEFAULT_BETA.get(name) if beta is None else beta
    fns = {
        "Relu": lambda x: np.maximum(x, 0),
        "Tanh": np.tanh,
        "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
        "Affine": lambda x: a * x + b,
        "LeakyRelu": lambda x: np.where(x >= 0, x, a * x),
        "ThresholdedRelu": lambda x: np.where(x > a, x, 0.0),  # ONNX ThresholdedRelu: x > alpha
        "ScaledTanh": lambda x: a * np.tanh(b * x),
        "HardSigmoid": lambda x: np.clip(a * x + b, 0, 1),
        "Elu": lambda x: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1)),
        "Softsign": lambda x: x / (1 + np.abs(x)),
        "Softplus": lambda x: np.logaddexp(0, x),
    }
    return fns[name]


def _prepare(X, layout, initial, B, D, H):
    if layout == 1:
        X = X.transpose(1, 0, 2)
        initial = [None if s is None else s.transpose(1, 0, 2) for s in initial]
    return X, [np.zeros((D, B, H)) if s is None else s.astype(np.float64) for s in initial]


def _finish(Y, states, layout):
    if layout == 1:
        return [Y.transpose(2, 0, 1, 3)] + [s.transpose(1, 0, 2) for s in states]
    return [Y] + list(states)


def _time_order(seq_len, T, reverse):
    return range(seq_len - 1, -1, -1) if reverse else range(seq_len)


def _directions(direction):
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


_USES_ALPHA = {"Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"}
_USES_BETA = {"Affine", "ScaledTanh", "HardSigmoid"}


def _acts(activations, alphas, betas, n_per_dir, defaults, D):
    # alpha/beta values are taken in order by the activations that have such a
    # parameter (onnxruntime's reading of "consumed in the order of activations").
    names = activations or defaults * D
    alphas = list(alphas or [])
    betas = list(betas or [])
    out = []
    for name in names:
        a = alphas.pop(0) if name in _USES_ALPHA and alphas else None
        b = betas.pop(0) if name in _USES_BETA and betas else None
        out.append(activation(name, a, b))
    return [out[d * n_per_dir:(d + 1) * n_per_dir] for d in range(D)]


def _setup(X, W, R, B, sequence_lens, states, direction, layout, clip, gates, acts,
           n_acts, defaults):
    """What every op's reference starts with: float64 X in layout 0, lengths,
    bias, activations per direction, the clip function and zeroed outputs."""
    X = np.asarray(X, np.float64)
    dirs = _directions(direction)
    D = len(dirs)
    H = R.shape[-1]
    X, states = _prepare(X, layout, states, X.shape[1 - layout], D, H)
    T, Bsz, _ = X.shape
    lens = np.full(Bsz, T) if sequence_lens is None else np.asarray(sequence_lens)
    Bias = np.zeros((D, 2 * gates * H)) if B is None else B.astype(np.float64)
    per_dir = _acts(acts[0], acts[1], acts[2], n_acts, defaults, D)
    cl = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    return X, dirs, H, T, Bsz, lens, Bias, per_dir, cl, states


def lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
         hidden_size=None, direction="forward", layout=0, clip=None, input_forget=0,
         activations=None, activation_alpha=None, activation_beta=None):
    """ONNX LSTM in float64. Returns [Y, Y_h, Y_c]."""
    X, dirs, H, T, Bsz, lens, Bias, acts, cl, (h0, c0) = _setup(
        X, W, R, B, sequence_lens, [initial_h, initial_c], direction, layout, clip, 4,
        (activations, activation_alpha, activation_beta), 3, ["Sigmoid", "Tanh", "Tanh"])
    D = len(dirs)
    Pp = np.zeros((D, 3 * H)) if P is None else P.astype(np.float64)
    Y = np.zeros((T, D, Bsz, H))
    Yh = np.zeros((D, Bsz, H))
    Yc = np.zeros((D, Bsz, H))
    for d, rev in enumerate(dirs):
        f, g, hf = acts[d]
        Wd, Rd = W[d].astype(np.float64), R[d].astype(np.float64)
        bias = Bias[d, :4 * H] + Bias[d, 4 * H:]
        pi, po, pf = Pp[d, :H], Pp[d, H:2 * H], Pp[d, 2 * H:]
        for b in range(Bsz):
            h, c = h0[d, b].copy(), c0[d, b].copy()
            for t in _time_order(lens[b], T, rev):
                gates = X[t, b] @ Wd.T + h @ Rd.T + bias
                gi, go, gf, gc = np.split(gates, 4)
                i = f(cl(gi + pi * c))
                fg = 1 - i if input_forget else f(cl(gf + pf * c))
                cc = g(cl(gc))
                c = fg * c + i * cc
                o = f(cl(go + po * c))
                h = o * hf(c)
                Y[t, d, b] = h
            if lens[b] > 0:   # a zero-length sequence reports zeros, as onnxruntime does
                Yh[d, b], Yc[d, b] = h, c
    return _finish(Y, [Yh, Yc], layout)


def gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, hidden_size=None,
        direction="forward", layout=0, clip=None, linear_before_reset=0,
        activations=None, activation_alpha=None, activation_beta=None):
    """ONNX GRU in float64. Returns [Y, Y_h]."""
    X, dirs, H, T, Bsz, lens, Bias, acts, cl, (h0,) = _setup(
        X, W, R, B, sequence_lens, [initial_h], direction, layout, clip, 3,
        (activations, activation_alpha, activation_beta), 2, ["Sigmoid", "Tanh"])
    D = len(dirs)
    Y = np.zeros((T, D, Bsz, H))
    Yh = np.zeros((D, Bsz, H))
    for d, rev in enumerate(dirs):
        f, g = acts[d]
        Wd, Rd = W[d].astype(np.float64), R[d].astype(np.float64)
        Wz, Wr, Wh = np.split(Wd, 3)
        Rz, Rr, Rh = np.split(Rd, 3)
        Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = np.split(Bias[d], 6)
        for b in range(Bsz):
            h = h0[d, b].copy()
            for t in _time_order(lens[b], T, rev):
                x = X[t, b]
                z = f(cl(x @ Wz.T + h @ Rz.T + Wbz + Rbz))
                r = f(cl(x @ Wr.T + h @ Rr.T + Wbr + Rbr))
                if linear_before_reset:
                    ht = g(cl(x @ Wh.T + r * (h @ Rh.T + Rbh) + Wbh))
                else:
                    ht = g(cl(x @ Wh.T + (r * h) @ Rh.T + Rbh + Wbh))
                h = (1 - z) * ht + z * h
                Y[t, d, b] = h
            if lens[b] > 0:
                Yh[d, b] = h
    return _finish(Y, [Yh], layout)


def rnn(X, W, R, B=None, sequence_lens=None, initial_h=None, *, hidden_size=None,
        direction="forward", layout=0, clip=None,
        activations=None, activation_alpha=None, activation_beta=None):
    """ONNX RNN in float64. Returns [Y, Y_h]."""
    X, dirs, H, T, Bsz, lens, Bias, acts, cl, (h0,) = _setup(
        X, W, R, B, sequence_lens, [initial_h], direction, layout, clip, 1,
        (activations, activation_alpha, activation_beta), 1, ["Tanh"])
    D = len(dirs)
    Y = np.zeros((T, D, Bsz, H))
    Yh = np.zeros((D, Bsz, H))
    for d, rev in enumerate(dirs):
        (f,) = acts[d]
        Wd, Rd = W[d].astype(np.float64), R[d].astype(np.float64)
        bias = Bias[d, :H] + Bias[d, H:]
        for b in range(Bsz):
            h = h0[d, b].copy()
            for t in _time_order(lens[b], T, rev):
                h = f(cl(X[t, b] @ Wd.T + h @ Rd.T + bias))
                Y[t, d, b] = h
            if lens[b] > 0:
                Yh[d, b] = h
    return _finish(Y, [Yh], layout)
