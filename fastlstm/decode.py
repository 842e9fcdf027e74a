"""Decoding the outputs of recurrent models: CTC and step-by-step generation.

CTC (a per-frame classifier read with connectionist temporal classification:
text readers, speech, keyword spotting)::

    logp = sess.run(None, {"image": img})[0]          # [T, B, C] log-probabilities
    texts = ctc_greedy(logp, lengths)                 # list of label arrays
    nbest = ctc_beam_search(logp, lengths, beam_width=8, n_best=3)

Generation and sequence-to-sequence, over a *step*: a callable that maps
the previous tokens and a state to next-token logits and the new state::

    step = session_step(dec, token_input="token", logits_output="logits",
                        state_io={"h": "h_out"}, batch_axes={"h": 1, "memory": 0})
    tokens, lengths = greedy(step, {"h": h0, "memory": enc}, start_token=1,
                             end_token=2, max_len=20)
    best = beam_search(step, state, start_token=1, end_token=2, beam_width=4)
    text = sample(step, state, start_token=0, max_len=200, temperature=0.8,
                  top_k=20, top_p=0.95, rng=np.random.default_rng(0))

``session_step`` drives a decoder-step session (state in, state out);
``stream_step`` drives a :class:`fastlstm.serving.Stream`, whose recurrent
state is carried by fastlstm itself.  Any Python callable with the same
signature works too (``step(tokens, state) -> (logits, state)``, tokens an
int64 array [n], logits [n, vocab]); beam search also needs to reorder the
rows of a state (``select``), which the two adapters provide.

The CTC decoders are compiled with Numba (one call per sequence, no Python
in the time loop).
"""
import math

import numpy as np
from numba import njit

from . import config
from .errors import InvalidInput

__all__ = ["ctc_greedy", "ctc_beam_search", "greedy", "beam_search", "sample",
           "session_step", "stream_step", "select_rows"]

#: the kernels' options, without fastmath: log-probabilities of -inf (impossible
#: prefixes) must stay -inf through additions and comparisons
_jit = config.jit_options(fastmath=set())


# --------------------------------------------------------------------------- CTC

def _ctc_inputs(log_probs, lengths, batch_first):
    """(array viewed as [B, T, C], lengths int64 [B], whether a single sequence)."""
    a = np.asarray(log_probs)
    if a.dtype.kind != "f":
        raise InvalidInput(f"log_probs must be floating point, got {a.dtype}")
    single = a.ndim == 2
    if single:
        a = a[:, None, :] if not batch_first else a[None]
    if a.ndim != 3:
        raise InvalidInput(f"log_probs must be [T, B, C] (or [B, T, C] with batch_first, or "
                           f"[T, C]), got shape {a.shape}")
    if not batch_first:
        a = a.transpose(1, 0, 2)
    B, T, C = a.shape
    if C < 1:
        raise InvalidInput("log_probs has no classes")
    if lengths is None:
        lens = np.full(B, T, np.int64)
    else:
        lens = np.asarray(lengths).astype(np.int64, copy=False).reshape(-1)
        if lens.shape[0] != B:
            raise InvalidInput(f"lengths has {lens.shape[0]} entries for a batch of {B}")
        if lens.size and (lens.min() < 0 or lens.max() > T):
            raise InvalidInput(f"lengths must be in [0, {T}], got {lens.tolist()}")
    return a, lens, single


def _check_blank(blank, C):
    if not -C <= int(blank) < C:
        raise InvalidInput(f"blank index {blank} is out of range for {C} classes")
    return int(blank) % C


@njit(**_jit)
def _greedy_kernel(lp, lens, blank, out, out_len):
    """Per sequence b: argmax per frame (first maximum), repeats collapsed,
    blanks dropped, into out[b, :out_len[b]]."""
    B, _, C = lp.shape
    for b in range(B):
        prev = -1
        n = 0
        for t in range(lens[b]):
            best = 0
            bv = lp[b, t, 0]
            for c in range(1, C):
                v = lp[b, t, c]
                if v > bv:
                    bv = v
                    best = c
            if best != blank and best != prev:
                out[b, n] = best
                n += 1
            prev = best
        out_len[b] = n


def ctc_greedy(log_probs, lengths=None, blank=0, batch_first=False):
    """Best-path CTC decoding: the most likely class of each frame, repeats
    collapsed, blanks dropped.

    Parameters
    ----------
    log_probs : array [T, B, C] (``batch_first``: [B, T, C]; or [T, C])
        Per-frame scores (log-probabilities, probabilities or logits: only
        their order per frame matters).
    lengths : int array [B], optional
        Frames of each sequence (default: all T).
    blank : int
        Index of the blank class (negative counts from the end).
    batch_first : bool
        ``log_probs`` is [B, T, C].

    Returns
    -------
    list of int64 arrays, one per sequence (a single array for [T, C] input).
    Ties between classes go to the lowest index, as ``np.argmax``.
    """
    a, lens, single = _ctc_inputs(log_probs, lengths, batch_first)
    B, T, C = a.shape
    blank = _check_blank(blank, C)
    out = np.zeros((B, max(T, 1)), np.int64)
    out_len = np.zeros(B, np.int64)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    _greedy_kernel(a, lens, blank, out, out_len)
    res = [out[b, :out_len[b]].copy() for b in range(B)]
    return res[0] if single else res


@njit(**_jit)
def _lse(a, b):
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@njit(**_jit)
def _top(x, n, k):
    """Indices of the k largest of x[:n], largest first; ties keep index order
    (an insertion into a sorted buffer: k is a beam width, small)."""
    k = min(k, n)
    idx = np.empty(k, np.int64)
    m = 0
    for i in range(n):
        v = x[i]
        if m == k and not v > x[idx[m - 1]]:
            continue
        j = m if m < k else k - 1
        while j > 0 and v > x[idx[j - 1]]:
            idx[j] = idx[j - 1]
            j -= 1
        idx[j] = i
        if m < k:
            m += 1
    return idx


@njit(**_jit)
def _grow(a, n, cap):
    """a[:n] in a new array of ``cap`` entries, the rest -1."""
    b = np.empty(cap, np.int64)
    b[:n] = a[:n]
    b[n:] = -1
    return b


@njit(**_jit)
def _beam_kernel(lp, T, blank, beam_width, char_top):
    """CTC prefix beam search over lp[:T] ([T, C] float64 log-probabilities).

    Prefixes are nodes of a trie (parent, label, first child, next sibling);
    a beam holds a node and two log-probabilities: of the prefix ending in
    blank (pb) and in its last label (pnb).  Candidates of a step get a slot
    each (``slot_of`` maps node -> slot, reset after the step).  Returns
    (parent, label, final nodes, their total log-probabilities), best first.
    """
    C = lp.shape[1]
    cap = 1024
    parent = _grow(np.empty(0, np.int64), 0, cap)
    label = _grow(parent, 0, cap)
    first = _grow(parent, 0, cap)
    sibling = _grow(parent, 0, cap)
    slot_of = _grow(parent, 0, cap)
    n_nodes = 1
    beams = np.zeros(1, np.int64)
    bpb = np.zeros(1, np.float64)
    bpnb = np.empty(1, np.float64)
    bpnb[0] = -np.inf
    maxc = beam_width * (C + 1)
    cnode = np.empty(maxc, np.int64)
    cpb = np.empty(maxc, np.float64)
    cpnb = np.empty(maxc, np.float64)
    child = np.empty(C, np.int64)
    order_c = np.empty(C, np.int64)
    for c in range(C):
        order_c[c] = c
    for t in range(T):
        row = lp[t]
        if char_top < C:
            order_c = _top(row, C, char_top)
        if n_nodes + beam_width * C >= cap:
            while n_nodes + beam_width * C >= cap:
                cap *= 2
            parent = _grow(parent, n_nodes, cap)
            label = _grow(label, n_nodes, cap)
            first = _grow(first, n_nodes, cap)
            sibling = _grow(sibling, n_nodes, cap)
            slot_of = _grow(slot_of, n_nodes, cap)
        nc = 0
        for k in range(beams.shape[0]):
            node = beams[k]
            pb = bpb[k]
            pnb = bpnb[k]
            last = label[node]
            for c in range(C):
                child[c] = -1
            ch = first[node]
            while ch >= 0:
                child[label[ch]] = ch
                ch = sibling[ch]
            for ci in range(order_c.shape[0]):
                c = order_c[ci]
                p = row[c]
                if c == blank:
                    tgt = node
                    add_b = _lse(pb + p, pnb + p)
                    add_nb = -np.inf
                else:
                    tgt = child[c]
                    if tgt < 0:
                        tgt = n_nodes
                        n_nodes += 1
                        parent[tgt] = node
                        label[tgt] = c
                        sibling[tgt] = first[node]
                        first[node] = tgt
                        child[c] = tgt
                    add_b = -np.inf
                    if c == last:
                        # a repeat extends only from a blank; without one it collapses
                        add_nb = pb + p
                        s = slot_of[node]
                        if s < 0:
                            s = nc
                            slot_of[node] = s
                            cnode[s] = node
                            cpb[s] = -np.inf
                            cpnb[s] = -np.inf
                            nc += 1
                        cpnb[s] = _lse(cpnb[s], pnb + p)
                    else:
                        add_nb = _lse(pb + p, pnb + p)
                s = slot_of[tgt]
                if s < 0:
                    s = nc
                    slot_of[tgt] = s
                    cnode[s] = tgt
                    cpb[s] = -np.inf
                    cpnb[s] = -np.inf
                    nc += 1
                cpb[s] = _lse(cpb[s], add_b)
                cpnb[s] = _lse(cpnb[s], add_nb)
        tot = np.empty(nc, np.float64)
        for s in range(nc):
            tot[s] = _lse(cpb[s], cpnb[s])
            slot_of[cnode[s]] = -1
        keep = _top(tot, nc, beam_width)
        nb = keep.shape[0]
        while nb > 1 and tot[keep[nb - 1]] == -np.inf:     # unreachable prefixes
            nb -= 1
        beams = np.empty(nb, np.int64)
        bpb = np.empty(nb, np.float64)
        bpnb = np.empty(nb, np.float64)
        for j in range(nb):
            beams[j] = cnode[keep[j]]
            bpb[j] = cpb[keep[j]]
            bpnb[j] = cpnb[keep[j]]
    tot = np.empty(beams.shape[0], np.float64)
    for s in range(beams.shape[0]):
        tot[s] = _lse(bpb[s], bpnb[s])
    order = _top(tot, tot.shape[0], tot.shape[0])
    fin = np.empty(order.shape[0], np.int64)
    ftot = np.empty(order.shape[0], np.float64)
    for j in range(order.shape[0]):
        fin[j] = beams[order[j]]
        ftot[j] = tot[order[j]]
    return parent[:n_nodes], label[:n_nodes], fin, ftot


def _labels_of(parent, label, node):
    out = []
    while node > 0:
        out.append(int(label[node]))
        node = int(parent[node])
    return np.array(out[::-1], np.int64)


def ctc_beam_search(log_probs, lengths=None, beam_width=10, blank=0, n_best=1,
                    batch_first=False, char_top_k=None):
    """CTC prefix beam search: the most probable label sequences, each summed
    over every frame alignment that collapses to it.

    Parameters
    ----------
    log_probs : array [T, B, C] (``batch_first``: [B, T, C]; or [T, C])
        Per-frame log-probabilities (a LogSoftmax output; apply one to logits).
    lengths : int array [B], optional
        Frames of each sequence (default: all T).
    beam_width : int
        Prefixes kept after each frame.
    blank : int
        Index of the blank class (negative counts from the end).
    n_best : int
        Results returned per sequence (at most ``beam_width``).
    batch_first : bool
        ``log_probs`` is [B, T, C].
    char_top_k : int, optional
        Extend each prefix only by the ``char_top_k`` most likely classes of
        the frame (faster on large vocabularies; default: every class).

    Returns
    -------
    For each sequence a list of up to ``n_best`` ``(labels, score)`` pairs,
    best first: ``labels`` an int64 array, ``score`` the log-probability of
    that labelling summed over the alignments the beam kept (float).  A
    single list for [T, C] input.  Equal scores keep the order in which the
    prefixes were first reached.
    """
    a, lens, single = _ctc_inputs(log_probs, lengths, batch_first)
    B, T, C = a.shape
    blank = _check_blank(blank, C)
    if int(beam_width) < 1 or int(n_best) < 1:
        raise InvalidInput(f"beam_width and n_best must be >= 1, got {beam_width}, {n_best}")
    top = C if char_top_k is None else max(1, min(int(char_top_k), C))
    res = []
    for b in range(B):
        lp = np.ascontiguousarray(a[b], np.float64)
        parent, label, nodes, tot = _beam_kernel(lp, int(lens[b]), blank, int(beam_width), top)
        res.append([(_labels_of(parent, label, int(nodes[k])), float(tot[k]))
                    for k in range(min(int(n_best), len(nodes)))])
    return res[0] if single else res


# ------------------------------------------------------------ step-wise decoding

def select_rows(state, idx, batch_axes=0):
    """``state`` with its batch rows taken in order ``idx`` (beam reordering).

    ``state`` is an array, None, or a dict / tuple / list of them (nested);
    ``batch_axes`` an int or, for a dict, {key: axis} (keys not named: 0).
    """
    if state is None:
        return None
    if isinstance(state, dict):
        out = {}
        for k, v in state.items():
            ax = batch_axes.get(k, 0) if isinstance(batch_axes, dict) else batch_axes
            out[k] = select_rows(v, idx, batch_axes if isinstance(v, dict) else ax)
        return out
    if isinstance(state, (tuple, list)):
        return type(state)(select_rows(v, idx, batch_axes) for v in state)
    return np.take(np.asarray(state), idx, axis=batch_axes)


class _Step:
    """A step callable with the ``select`` that beam search needs."""

    def __call__(self, tokens, state):
        raise NotImplementedError

    def select(self, state, idx):
        return select_rows(state, idx, self.batch_axes)


class session_step(_Step):
    """Drive a decoder-step session: ``step(tokens, state) -> (logits, state)``.

    Parameters
    ----------
    session : InferenceSession
        A graph that takes the previous token and the state, and returns the
        next token's logits (or log-probabilities) and the new state.
    token_input : str
        Name of the token input; its rank sets how tokens are fed: rank 1
        [n], rank 2 [n, 1] (or [1, n] with ``time_major``).
    logits_output : str
        Name of the output with the next-token scores ([n, V], [n, 1, V] or
        [1, n, V]).
    state_io : dict
        {state input name: output name that holds its next value}.
    batch_axes : int or dict
        Batch axis of each state entry ({name: axis}, 0 for names not given).
        LSTM/GRU states ([layers, batch, hidden]) have it at 1.
    time_major : bool
        A rank-2 token input is [1, n] (not [n, 1]).

    The state is a dict {input name: array} holding every input but the
    token: the ``state_io`` ones are replaced after each step, the others
    (an encoder's outputs, say) are passed along unchanged.
    """

    def __init__(self, session, token_input, logits_output, state_io=None, batch_axes=0,
                 time_major=False):
        self.session = session
        self.token_input = token_input
        self.logits_output = logits_output
        self.state_io = dict(state_io or {})
        self.batch_axes = batch_axes
        info = {i.name: i for i in session.get_inputs()}
        if token_input not in info:
            raise InvalidInput(f"'{token_input}' is not an input of the session; its inputs "
                               f"are {sorted(info)}")
        shape = info[token_input].shape
        self._rank = len(shape) if shape is not None else 1
        t = info[token_input].type
        self._dtype = {"tensor(int32)": np.int32, "tensor(float)": np.float32}.get(t, np.int64)
        self._time_major = time_major
        self._outputs = [logits_output] + list(self.state_io.values())

    def __call__(self, tokens, state):
        tok = np.asarray(tokens, self._dtype).reshape(-1)
        n = tok.shape[0]
        if self._rank == 2:
            tok = tok.reshape((1, n) if self._time_major else (n, 1))
        elif self._rank == 0:
            tok = tok.reshape(())
        feed = dict(state)
        feed[self.token_input] = tok
        outs = self.session.run(self._outputs, feed)
        new = dict(state)
        for name, v in zip(self.state_io, outs[1:]):
            new[name] = v
        return np.asarray(outs[0]).reshape(n, -1), new


class stream_step(_Step):
    """Drive a :class:`fastlstm.serving.Stream`: ``step(tokens, state) -> (logits, state)``.

    The stream carries the recurrent state; ``state`` here is the stream's
    ``state`` snapshot (``None`` at the start: the stream's current state), so
    beam search can branch and reorder it.  The stream's ``batch_size`` must
    equal the rows decoded at once (1 for greedy decoding of one sequence,
    ``beam_width`` for beam search).

    Parameters
    ----------
    stream : Stream
    token_input, logits_output : str
        As for :class:`session_step`; the token is fed as one time step
        ([1, n] for a rank-2 input unless ``batch_first``).
    feed : dict, optional
        Further inputs fed unchanged on every step.
    batch_first : bool
        A rank-2 token input is [n, 1].
    """

    batch_axes = 1      # every stream state is [directions, batch, hidden]

    def __init__(self, stream, token_input, logits_output, feed=None, batch_first=False):
        self.stream = stream
        self.token_input = token_input
        self.logits_output = logits_output
        self.feed = dict(feed or {})
        info = {i.name: i for i in stream._session.get_inputs()}
        if token_input not in info:
            raise InvalidInput(f"'{token_input}' is not an input of the session")
        shape = info[token_input].shape
        self._rank = len(shape) if shape is not None else 2
        t = info[token_input].type
        self._dtype = {"tensor(int32)": np.int32, "tensor(float)": np.float32}.get(t, np.int64)
        self._batch_first = batch_first
        self._current = None

    def __call__(self, tokens, state):
        if state is not None and state is not self._current:
            self.stream.set_state(state)
        tok = np.asarray(tokens, self._dtype).reshape(-1)
        n = tok.shape[0]
        if self._rank == 2:
            tok = tok.reshape((n, 1) if self._batch_first else (1, n))
        feed = dict(self.feed)
        feed[self.token_input] = tok
        logits, = self.stream.run([self.logits_output], feed)
        self._current = self.stream.state
        return np.asarray(logits).reshape(n, -1), self._current

    def select(self, state, idx):
        if state is None:
            state = self.stream.state
        return select_rows(state, idx, 1)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _start_tokens(start_token, n):
    s = np.asarray(start_token, np.int64).reshape(-1)
    if s.size == 1:
        return np.full(n, int(s[0]), np.int64)
    if s.size != n:
        raise InvalidInput(f"start_token has {s.size} entries for a batch of {n}")
    return s.copy()


def greedy(step, state, start_token, max_len, end_token=None, batch_size=1):
    """Greedy decoding: feed back the most likely token until ``end_token``
    or ``max_len`` tokens.

    Parameters
    ----------
    step : callable
        ``step(tokens [n] int64, state) -> (logits [n, V], state)``, e.g.
        :class:`session_step` or :class:`stream_step`.
    state : object
        The initial state ``step`` takes (rows = the batch).
    start_token : int or int array [batch_size]
        The first token fed.
    max_len : int
        Tokens generated at most per sequence.
    end_token : int, optional
        Generation of a sequence stops when it produces this token (not
        included in the result).
    batch_size : int
        Sequences decoded together (the state's batch).

    Returns
    -------
    (tokens int64 [batch_size, max_len], lengths int64 [batch_size]): row b
    holds its tokens in ``tokens[b, :lengths[b]]`` (the rest is padding).
    """
    tok = _start_tokens(start_token, batch_size)
    out = np.zeros((batch_size, max_len), np.int64)
    lengths = np.zeros(batch_size, np.int64)
    done = np.zeros(batch_size, bool)
    for t in range(max_len):
        logits, state = step(tok, state)
        tok = np.argmax(np.asarray(logits).reshape(batch_size, -1), axis=1).astype(np.int64)
        fin = (tok == end_token) if end_token is not None else np.zeros(batch_size, bool)
        live = ~done & ~fin
        out[live, t] = tok[live]
        lengths[live] += 1
        done |= fin
        if done.all():
            break
    return out, lengths


def _filter(logits, temperature, top_k, top_p):
    """Per row: scores after temperature, top-k and nucleus (top-p) cuts (cut: -inf)."""
    z = np.asarray(logits, np.float64) / temperature
    V = z.shape[-1]
    if top_k is not None and 0 < top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[:, V - top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-z, axis=-1, kind="stable")
        sz = np.take_along_axis(z, order, axis=-1)
        p = np.exp(_log_softmax(sz))
        cum = np.cumsum(p, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (at least one token)
        cut = (cum - p) >= top_p
        cut[:, 0] = False
        sz = np.where(cut, -np.inf, sz)
        z = np.empty_like(z)
        np.put_along_axis(z, order, sz, axis=-1)
    return z


def sample(step, state, start_token, max_len, end_token=None, temperature=1.0, top_k=None,
           top_p=None, rng=None, batch_size=1):
    """Sampling: each next token drawn from the step's distribution, after
    temperature, top-k and nucleus (top-p) filtering.

    Parameters
    ----------
    step, state, start_token, max_len, end_token, batch_size
        As for :func:`greedy`.
    temperature : float
        Logits are divided by it (> 0; lower is more conservative).
    top_k : int, optional
        Draw only among the k most likely tokens.
    top_p : float, optional
        Draw only among the most likely tokens whose probabilities sum to at
        least ``top_p`` (nucleus sampling).
    rng : numpy.random.Generator or int, optional
        Source of randomness (a seed makes the output reproducible).

    Returns
    -------
    (tokens int64 [batch_size, max_len], lengths int64 [batch_size]) as
    :func:`greedy`.
    """
    if not temperature > 0:
        raise InvalidInput(f"temperature must be > 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InvalidInput(f"top_p must be in (0, 1], got {top_p}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    tok = _start_tokens(start_token, batch_size)
    out = np.zeros((batch_size, max_len), np.int64)
    lengths = np.zeros(batch_size, np.int64)
    done = np.zeros(batch_size, bool)
    for t in range(max_len):
        logits, state = step(tok, state)
        z = _filter(np.asarray(logits).reshape(batch_size, -1), temperature, top_k, top_p)
        p = np.exp(_log_softmax(z))
        u = rng.random(batch_size)
        cum = np.cumsum(p, axis=1)
        tok = np.minimum((cum < (u * cum[:, -1])[:, None]).sum(axis=1),
                         p.shape[1] - 1).astype(np.int64)
        fin = (tok == end_token) if end_token is not None else np.zeros(batch_size, bool)
        live = ~done & ~fin
        out[live, t] = tok[live]
        lengths[live] += 1
        done |= fin
        if done.all():
            break
    return out, lengths


def beam_search(step, state, start_token, max_len, end_token=None, beam_width=4, n_best=1,
                length_penalty=1.0, select=None):
    """Beam search over a step function, for one sequence.

    The beams run as a batch of ``beam_width`` rows (the state's batch must
    be ``beam_width``: repeat one sequence's state with ``select(state,
    np.zeros(beam_width, int))``, or open the stream with that batch size);
    after each step the rows are reordered with ``select``.

    Parameters
    ----------
    step, state, start_token, max_len, end_token
        As for :func:`greedy` (the state already has ``beam_width`` rows).
    beam_width : int
    n_best : int
        Hypotheses returned.
    length_penalty : float
        Finished hypotheses are ranked by ``sum of log-probabilities /
        length ** length_penalty`` (0: raw sum, 1: mean per token); the
        length counts the end token.
    select : callable, optional
        ``select(state, rows) -> state``; default ``step.select``.

    Returns
    -------
    list of up to ``n_best`` ``(tokens int64 array, score)``, best first;
    ``score`` is the normalised log-probability.
    """
    W = int(beam_width)
    if W < 1:
        raise InvalidInput(f"beam_width must be >= 1, got {beam_width}")
    if select is None:
        select = getattr(step, "select", None)
        if select is None:
            raise InvalidInput("beam_search needs select(state, rows) (or a step with a "
                               "select method)")
    tok = np.full(W, int(np.asarray(start_token).reshape(-1)[0]), np.int64)
    score = np.full(W, -np.inf)
    score[0] = 0.0          # all beams start equal: only one may extend
    hist = np.zeros((W, 0), np.int64)
    finished = []

    def norm(s, n):
        return s / (max(n, 1) ** length_penalty)

    stopped = False
    for t in range(max_len):
        logits, state = step(tok, state)
        lp = _log_softmax(np.asarray(logits).reshape(W, -1))
        V = lp.shape[1]
        cand = (score[:, None] + lp).reshape(-1)
        order = np.argsort(-cand, kind="stable")
        rows, toks, scores = [], [], []
        for j in order:
            s = cand[j]
            if s == -np.inf:
                break
            r, v = divmod(int(j), V)
            if end_token is not None and v == end_token:
                finished.append((hist[r].copy(), norm(s, t + 1)))
                continue
            rows.append(r)
            toks.append(v)
            scores.append(s)
            if len(rows) == W:
                break
        if not rows:
            stopped = True
            break
        while len(rows) < W:            # fewer live candidates than beams
            rows.append(rows[0])
            toks.append(toks[0])
            scores.append(-np.inf)
        idx = np.array(rows, np.int64)
        state = select(state, idx)
        hist = np.concatenate([hist[idx], np.array(toks, np.int64)[:, None]], axis=1)
        tok = np.array(toks, np.int64)
        score = np.array(scores)
        # with raw sums (no length normalisation) a live beam only loses score:
        # once n_best finished ones beat the best live one, nothing can change
        if length_penalty == 0 and len(finished) >= n_best and \
                sorted(f[1] for f in finished)[-n_best] >= score.max():
            stopped = True
            break
    if not stopped:                     # max_len reached: live beams count as they are
        for r in range(W):
            if score[r] > -np.inf:
                finished.append((hist[r].copy(), norm(score[r], hist.shape[1])))
    finished.sort(key=lambda f: -f[1])
    return finished[:n_best]
