"""fastlstm.decode: CTC greedy and prefix beam search against plain Python
references written here, on hand-checkable cases; step-wise greedy, beam
search and sampling against brute force and against the same decoders
driven by onnxruntime."""
import itertools
import math

import numpy as np
import pytest

from fastlstm import decode
from fastlstm.errors import InvalidInput


# ------------------------------------------------------------ plain references

def ref_ctc_greedy(lp, blank):
    """lp [T, C]: best path, collapsed, blanks dropped."""
    best = [int(np.argmax(row)) for row in lp]
    out, prev = [], None
    for c in best:
        if c != blank and c != prev:
            out.append(c)
        prev = c
    return out


def _lse(*xs):
    m = max(xs)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in xs))


def ref_prefix_beam(lp, blank, beam):
    """Textbook CTC prefix beam search in log space (dicts of prefix tuples)."""
    beams = {(): (0.0, -math.inf)}
    for row in lp:
        nxt = {}

        def add(prefix, b=-math.inf, nb=-math.inf):
            ob, onb = nxt.get(prefix, (-math.inf, -math.inf))
            nxt[prefix] = (_lse(ob, b), _lse(onb, nb))

        for prefix, (pb, pnb) in beams.items():
            for c, p in enumerate(row):
                p = float(p)
                if c == blank:
                    add(prefix, b=_lse(pb + p, pnb + p))
                elif prefix and prefix[-1] == c:
                    add(prefix + (c,), nb=pb + p)
                    add(prefix, nb=pnb + p)
                else:
                    add(prefix + (c,), nb=_lse(pb + p, pnb + p))
        ranked = sorted(nxt.items(), key=lambda kv: -_lse(*kv[1]))
        beams = dict(ranked[:beam])
    return sorted(((list(k), _lse(*v)) for k, v in beams.items()), key=lambda kv: -kv[1])


def ctc_prob(labels, probs, blank):
    """Probability of a labelling: sum over every alignment (brute force)."""
    T, C = probs.shape
    total = 0.0
    for path in itertools.product(range(C), repeat=T):
        if ref_ctc_greedy(np.eye(C)[list(path)], blank) == list(labels):
            total += float(np.prod([probs[t, c] for t, c in enumerate(path)]))
    return total


def random_log_probs(rng, T, B, C, peak=3.0):
    z = rng.standard_normal((T, B, C)) * peak
    z -= np.log(np.exp(z).sum(-1, keepdims=True))
    return z.astype(np.float32)


# ------------------------------------------------------------------ CTC greedy

def test_ctc_greedy_hand_cases():
    # frames: a a - a b b - - c (blank 0, a=1, b=2, c=3)
    frames = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    lp = np.log(np.full((len(frames), 4), 0.1, np.float32))
    lp[np.arange(len(frames)), frames] = np.log(0.7)
    assert decode.ctc_greedy(lp).tolist() == [1, 1, 2, 3]
    # blank as the last class
    lp2 = lp[:, [1, 2, 3, 0]]
    assert decode.ctc_greedy(lp2, blank=-1).tolist() == [0, 0, 1, 2]
    assert decode.ctc_greedy(lp2, blank=3).tolist() == [0, 0, 1, 2]


def test_ctc_greedy_batched_variable_lengths_vs_reference():
    rng = np.random.default_rng(1)
    T, B, C = 30, 6, 7
    lp = random_log_probs(rng, T, B, C, peak=1.0)
    lens = np.array([30, 0, 1, 17, 29, 5])
    for blank in (0, 3, C - 1):
        got = decode.ctc_greedy(lp, lens, blank=blank)
        assert len(got) == B
        for b in range(B):
            assert got[b].tolist() == ref_ctc_greedy(lp[:lens[b], b], blank)
        bf = decode.ctc_greedy(lp.transpose(1, 0, 2).copy(), lens, blank=blank, batch_first=True)
        assert [g.tolist() for g in bf] == [g.tolist() for g in got]


def test_ctc_errors():
    lp = np.zeros((3, 1, 4), np.float32)
    with pytest.raises(InvalidInput):
        decode.ctc_greedy(lp, [4])
    with pytest.raises(InvalidInput):
        decode.ctc_greedy(lp, blank=4)
    with pytest.raises(InvalidInput):
        decode.ctc_beam_search(lp, beam_width=0)
    with pytest.raises(InvalidInput):
        decode.ctc_greedy(np.zeros(3, np.float32))


# ----------------------------------------------------------- CTC beam search

def test_ctc_beam_hand_cases():
    # T=2, blank 0, a=1 at 0.6 each frame: "a" has 3 alignments (aa, a-, -a)
    p = np.array([[0.4, 0.6], [0.4, 0.6]])
    res = decode.ctc_beam_search(np.log(p), beam_width=4, n_best=2)
    assert res[0][0].tolist() == [1]
    assert res[0][1] == pytest.approx(math.log(0.36 + 0.24 + 0.24))
    assert res[1][0].tolist() == [] and res[1][1] == pytest.approx(math.log(0.16))
    # best path is blank-blank ("", 0.16), but "a" sums to 0.33: beam search finds it
    p = np.array([[0.4, 0.3, 0.3], [0.4, 0.3, 0.3]])
    assert decode.ctc_greedy(np.log(p)).tolist() == []
    res = decode.ctc_beam_search(np.log(p), beam_width=8, n_best=5)
    assert res[0][0].tolist() in ([1], [2])
    assert res[0][1] == pytest.approx(math.log(0.33))
    # every labelling's score is its total probability (the beam keeps all here)
    for labels, score in res:
        assert score == pytest.approx(math.log(ctc_prob(labels, p, 0)))
    # "aa" needs a blank between the two a's
    p = np.array([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])
    res = decode.ctc_beam_search(np.log(p), beam_width=10, n_best=10)
    assert res[0][0].tolist() == [1, 1]
    for labels, score in res:
        assert score == pytest.approx(math.log(ctc_prob(labels, p, 0)), rel=1e-9)


@pytest.mark.parametrize("blank", [0, 4])
def test_ctc_beam_vs_reference(blank):
    rng = np.random.default_rng(2)
    T, B, C = 14, 4, 5
    lp = random_log_probs(rng, T, B, C, peak=1.5)
    lens = np.array([14, 9, 1, 0])
    got = decode.ctc_beam_search(lp, lens, beam_width=6, blank=blank, n_best=6)
    for b in range(B):
        ref = ref_prefix_beam(lp[:lens[b], b].astype(np.float64), blank, 6)
        assert len(got[b]) == len(ref)
        for (gl, gs), (rl, rs) in zip(got[b], ref):
            assert gs == pytest.approx(rs, abs=1e-9)
        # labellings agree wherever scores are not tied
        scores = [s for _, s in ref]
        for k, ((gl, gs), (rl, rs)) in enumerate(zip(got[b], ref)):
            tied = any(j != k and abs(scores[j] - rs) < 1e-9 for j in range(len(scores)))
            if not tied:
                assert gl.tolist() == rl
        # the single-sequence call gives the same
        one = decode.ctc_beam_search(lp[:lens[b], b], beam_width=6, blank=blank, n_best=6)
        assert [(x.tolist(), s) for x, s in one] == [(x.tolist(), s) for x, s in got[b]]


def test_ctc_beam_width_one_is_greedy_on_peaked_input():
    rng = np.random.default_rng(3)
    lp = random_log_probs(rng, 40, 3, 9, peak=8.0)
    g = decode.ctc_greedy(lp)
    b = decode.ctc_beam_search(lp, beam_width=1)
    assert [x.tolist() for x in g] == [r[0][0].tolist() for r in b]


def test_ctc_beam_char_top_k():
    rng = np.random.default_rng(4)
    lp = random_log_probs(rng, 20, 1, 30, peak=4.0)
    full = decode.ctc_beam_search(lp, beam_width=5, n_best=3)[0]
    top = decode.ctc_beam_search(lp, beam_width=5, n_best=3, char_top_k=29)[0]
    assert full[0][0].tolist() == top[0][0].tolist()
    assert top[0][1] == pytest.approx(full[0][1], abs=1e-3)


# ------------------------------------------------- step-wise: a synthetic step

V, END, START = 5, 4, 0


class TableStep:
    """logits = table[step count, previous token]; state: step counts [n, 1]."""

    def __init__(self, seed=0, L=6):
        rng = np.random.default_rng(seed)
        self.table = rng.standard_normal((L, V, V)) * 2
        self.batch_axes = 0

    def __call__(self, tokens, state):
        t = state[:, 0]
        return self.table[t, tokens], state + 1

    def select(self, state, idx):
        return state[idx]


def _logp(z):
    z = z - z.max()
    return z - math.log(np.exp(z).sum())


def brute_force_best(step, max_len, alpha):
    """Every token sequence up to max_len (ended by END or by max_len)."""
    best = []
    for L in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=L):
            if END in seq[:-1]:
                continue
            if L < max_len and seq[-1] != END:
                continue
            tok, t, s = START, 0, 0.0
            for v in seq:
                s += _logp(step.table[t, tok])[v]
                tok, t = v, t + 1
            out = [v for v in seq if v != END]
            best.append((out, s / (L ** alpha)))
    best.sort(key=lambda kv: -kv[1])
    return best


def test_greedy_matches_manual_loop():
    step = TableStep(0)
    tokens, lens = decode.greedy(step, np.zeros((3, 1), np.int64), [0, 1, 2], max_len=5,
                                 end_token=END, batch_size=3)
    for b, s in enumerate([0, 1, 2]):
        tok, out = s, []
        for t in range(5):
            tok = int(np.argmax(step.table[t, tok]))
            if tok == END:
                break
            out.append(tok)
        assert tokens[b, :lens[b]].tolist() == out


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_exhaustive_equals_brute_force(alpha):
    step = TableStep(1)
    max_len = 4
    W = V ** max_len
    got = decode.beam_search(step, np.zeros((W, 1), np.int64), START, max_len, END,
                             beam_width=W, n_best=3, length_penalty=alpha)
    ref = brute_force_best(step, max_len, alpha)
    for (gt, gs), (rt, rs) in zip(got, ref[:3]):
        assert gs == pytest.approx(rs, abs=1e-9)
        assert gt.tolist() == rt


def test_beam_search_narrow_beats_or_equals_greedy():
    step = TableStep(2)
    W = 3
    best = decode.beam_search(step, np.zeros((W, 1), np.int64), START, 5, END, beam_width=W,
                              length_penalty=0.0)[0]
    tokens, lens = decode.greedy(step, np.zeros((1, 1), np.int64), START, 5, END)
    g = tokens[0, :lens[0]].tolist()
    tok, t, s = START, 0, 0.0
    for v in g + ([END] if lens[0] < 5 else []):
        s += _logp(step.table[t, tok])[v]
        tok, t = v, t + 1
    assert best[1] >= s - 1e-12


def test_sampling_distribution_and_filters():
    table = np.log(np.array([0.5, 0.3, 0.2]))
    step = lambda tok, st: (np.broadcast_to(table, (tok.shape[0], 3)), st)  # noqa: E731
    n = 20000
    toks, _ = decode.sample(step, None, 0, 1, rng=np.random.default_rng(0), batch_size=n)
    freq = np.bincount(toks[:, 0], minlength=3) / n
    assert np.allclose(freq, [0.5, 0.3, 0.2], atol=0.015)
    toks, _ = decode.sample(step, None, 0, 1, rng=1, batch_size=n, top_k=2)
    freq = np.bincount(toks[:, 0], minlength=3) / n
    assert freq[2] == 0 and np.allclose(freq[:2], [0.625, 0.375], atol=0.015)
    toks, _ = decode.sample(step, None, 0, 1, rng=2, batch_size=n, top_p=0.6)
    assert set(np.unique(toks)) == {0, 1}
    toks, _ = decode.sample(step, None, 0, 1, rng=2, batch_size=n, top_p=0.5)
    assert set(np.unique(toks)) == {0}
    toks, _ = decode.sample(step, None, 0, 1, rng=3, batch_size=n, temperature=0.25)
    p = np.array([0.5, 0.3, 0.2]) ** 4
    assert np.allclose(np.bincount(toks[:, 0], minlength=3) / n, p / p.sum(), atol=0.015)
    # seeded: reproducible; top_k=1: greedy
    st = TableStep(3)
    a = decode.sample(st, np.zeros((2, 1), np.int64), START, 5, END, rng=7, batch_size=2)
    b = decode.sample(st, np.zeros((2, 1), np.int64), START, 5, END, rng=7, batch_size=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    k1 = decode.sample(st, np.zeros((1, 1), np.int64), START, 5, END, top_k=1, rng=0)
    gr = decode.greedy(st, np.zeros((1, 1), np.int64), START, 5, END)
    assert np.array_equal(k1[0], gr[0]) and np.array_equal(k1[1], gr[1])


# ------------------------------------- drivers: a step session and a stream

E, H = 6, 16


def _char_step_model(path):
    """token [1, n] -> Gather(embedding) -> LSTM (h0, c0 in; Y_h, Y_c out) -> logits [n, V]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("emb", rng.standard_normal((V, E))), ("W", rng.standard_normal((1, 4 * H, E)) * 0.5),
        ("R", rng.standard_normal((1, 4 * H, H)) * 0.5), ("B", rng.standard_normal((1, 8 * H)) * .1),
        ("Wo", rng.standard_normal((H, V)) * 2)]]
    inits.append(numpy_helper.from_array(np.array([-1, H], np.int64), "shp"))
    nodes = [helper.make_node("Gather", ["emb", "token"], ["x"]),
             helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["y", "h1", "c1"],
                              hidden_size=H),
             helper.make_node("Reshape", ["y", "shp"], ["y2"]),
             helper.make_node("MatMul", ["y2", "Wo"], ["logits"])]
    g = helper.make_graph(nodes, "charstep", [
        helper.make_tensor_value_info("token", TensorProto.INT64, [1, "n"]),
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "n", H]),
        helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "n", H])], [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", V]),
        helper.make_tensor_value_info("h1", TensorProto.FLOAT, [1, "n", H]),
        helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, "n", H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def char_step(tmp_path_factory):
    return _char_step_model(str(tmp_path_factory.mktemp("dec") / "charstep.onnx"))


def test_session_and_stream_drivers_match_onnxruntime(char_step):
    import onnxruntime as ort
    import fastlstm
    sess = fastlstm.InferenceSession(char_step)
    ref = ort.InferenceSession(char_step, providers=["CPUExecutionProvider"])
    zeros = {"h0": np.zeros((1, 1, H), np.float32), "c0": np.zeros((1, 1, H), np.float32)}
    io = {"h0": "h1", "c0": "c1"}
    mk = lambda s: decode.session_step(s, "token", "logits", io, batch_axes=1,  # noqa: E731
                                       time_major=True)
    got = decode.greedy(mk(sess), zeros, 0, 12)
    want = decode.greedy(mk(ref), zeros, 0, 12)
    assert np.array_equal(got[0], want[0])
    stream = sess.stream()
    st = decode.stream_step(stream, "token", "logits")
    via_stream = decode.greedy(st, None, 0, 12)
    assert np.array_equal(via_stream[0], want[0])
    # sampling: same seed, same tokens through either engine
    a = decode.sample(mk(sess), zeros, 0, 20, temperature=0.7, top_k=3, top_p=0.9, rng=11)
    b = decode.sample(mk(ref), zeros, 0, 20, temperature=0.7, top_k=3, top_p=0.9, rng=11)
    assert np.array_equal(a[0], b[0])
    # beam search: fastlstm session, onnxruntime session, fastlstm stream of 4 rows
    W = 4
    z4 = {k: np.zeros((1, W, H), np.float32) for k in zeros}
    bf = decode.beam_search(mk(sess), z4, 0, 8, END, beam_width=W, n_best=2)
    bo = decode.beam_search(mk(ref), z4, 0, 8, END, beam_width=W, n_best=2)
    bs = decode.beam_search(decode.stream_step(sess.stream(batch_size=W), "token", "logits"),
                            None, 0, 8, END, beam_width=W, n_best=2)
    for x, y, z in zip(bf, bo, bs):
        assert x[0].tolist() == y[0].tolist() == z[0].tolist()
        assert x[1] == pytest.approx(y[1], abs=1e-4) and x[1] == pytest.approx(z[1], abs=1e-9)
