"""A plan's run for one input signature as one generated Python function.

The general executor (``fastlstm.plan.Plan.run``) looks every node up,
builds its argument list and stores each output in a dict: about a
microsecond per node.  For a fixed signature (every input shape known, the
shape arithmetic already folded by ``fastlstm.specialize``) the same run is a
list of straight-line statements over local variables:

- views (reshapes of a known shape, slices and transposes that keep a run of
  consecutive elements, reductions over axes of one element) are taken from
  the array their chain started at, in one line or none (the array itself;
  a view of a reused buffer is made once with it), and views nothing reads
  are dropped;
- chains of float elementwise ops are one fused loop (``fastlstm.fuse``);
- dense layers (MatMul by constant weights with its bias Add, Gemm) are one
  ``kernels.dense.dense_into`` call that also applies a following Tanh, Relu
  or Sigmoid; Concat along a leading axis, last-axis Softmax and small
  products of two computed matrices call one kernel each; ops that move
  elements (Gather by constant indices, Tile, a reflecting Pad) take by an
  index map;
- other table ops call their bind or function directly; recurrent layers
  and convs are called through their kernels or runners.

A step whose kernel writes a new array writes it into a buffer; buffers of
values that do not escape (not returned, nor any view of them, and read only
by steps that keep no view) are made once per thread and reused (``_Scratch``).
At a decoder step's sizes each numpy call or allocation was 0.4-2.5 us of
overhead, most of the run besides the recurrent layer (see the kernels'
docstrings for the measurements).

``compile_plan`` records one run to learn every value's shape and dtype, then
writes and compiles the function.
"""
import numpy as np

from .errors import InvalidInput
from .ops.basic import GlueRunner
from .ops.table import OPS, form_of
from . import fuse
from .kernels.dense import ACTS

_VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
_UFUNCS = {"Add": "np.add", "Sub": "np.subtract", "Mul": "np.multiply"}

#: Float unary ops as one numpy call (when not part of a fused chain)
_UNARY = {"Relu": "np.maximum({}, np.float32(0))", "Tanh": "np.tanh({})",
          "Sqrt": "np.sqrt({})", "Exp": "np.exp({})", "Log": "np.log({})",
          "Abs": "np.abs({})", "Neg": "np.negative({})"}

#: Elementwise ops one numpy call computes: alone, they are not worth a
#: compiled loop of their own (the others, Sigmoid say, take several calls).
_CHEAP_ALONE = {"Add", "Sub", "Mul", "Div", "Relu", "Tanh", "Sqrt", "Exp", "Log", "Abs",
                "Neg", "Reciprocal", "Pow", "Cast"}


def _movement_map(n, rec, consts):
    """For an op that only moves elements of input 0 (``moves`` in the table),
    with every other input constant: the flat source index of each output
    element, or None."""
    decl = OPS.get(n.op_type)
    # A Pad that reflects, repeats or wraps moves elements too; one take by
    # the map (0.8 us for Silero's [1, 576] -> [1, 640]) replaced the bind's
    # three slice copies (~3 us).  Up to 64K elements: beyond, reading 8
    # bytes of index per element cost more than the copies (the sequence
    # variant's [293, 832]).
    pad = n.op_type == "Pad" and n.attrs.get("mode", "constant") not in ("constant", b"constant")
    if decl is None or not (decl.moves or pad) or len(n.outputs) != 1:
        return None
    if any(i and i not in consts for i in n.inputs[1:]):
        return None
    x = rec.get(n.inputs[0])
    out = rec.get(n.outputs[0])
    if x is None or out is None or x.size >= 2 ** 31 or out.size > (1 << 16 if pad else 1 << 24):
        return None
    idx = np.arange(x.size, dtype=np.int64).reshape(x.shape)
    try:
        got = form_of(n).fn(n, [idx] + [consts[i] if i else None for i in n.inputs[1:]], 1)[0]
    except Exception:
        return None
    got = np.asarray(got)
    if got.dtype != np.int64 or got.shape != out.shape:
        return None
    return np.ascontiguousarray(got)


def _readers(nodes):
    """{value name: indices of the nodes that read it}"""
    readers = {}
    for k, n in enumerate(nodes):
        for i in n.inputs:
            if i:
                readers.setdefault(i, []).append(k)
    return readers


#: Whether a specialised run fuses a MaxPool into the Conv before it (see
#: ``_fuse_conv_activation``); off for benchmarks that compare the two.
FUSE_POOL = True


def _fuse_conv_activation(nodes, runners, outputs, rec):
    """Convs whose only reader is a Relu, a Sigmoid, or a Clip with constant
    bounds (as its data input), or a SiLU (a Sigmoid and a Mul of the Conv's
    output by it, PyTorch's export of nn.SiLU), apply it themselves; then,
    when the only reader of that is a MaxPool whose windows tile it
    (``ConvRunner.fused_pool``), the pool too.

    Returns {activation node index: conv output name}, {conv index: name of
    the output it computes} (the pool's, for a fused pool), the indices of
    the other nodes a conv computes (SiLU's Mul, a pool), and per node the
    runner to call (a fused copy of the conv's, so the general path, which
    still runs those nodes, is left as it was)."""
    readers = _readers(nodes)
    alias, target, absorbed = {}, {}, set()
    runners = list(runners)
    for k, (n, r) in enumerate(zip(nodes, runners)):
        make = getattr(r, "fused", None)
        if make is None or not n.outputs or n.outputs[0] in outputs:
            continue
        out = n.outputs[0]
        rs = readers.get(out, [])
        new = None
        if len(rs) == 1:
            act = nodes[rs[0]]
            if act.op_type in ("Relu", "Sigmoid"):
                new = make(act.op_type)
            elif (act.op_type == "Clip" and act.inputs[0] == out
                  and out not in act.inputs[1:]
                  and hasattr(r, "clip_bounds_from")):
                bounds = r.clip_bounds_from(act)
                if bounds is not None:
                    new = make("Clip", bounds)
            if new is not None:
                alias[rs[0]] = out
                last = act
        elif len(rs) == 2 and (silu := _silu(nodes, rs, out, readers, outputs)) is not None:
            new = make("SiLU")
            if new is not None:
                sig, mul = silu
                absorbed.add(sig)
                alias[mul] = out
                last = nodes[mul]
        if new is None:
            new, last = r, n
        # a MaxPool after it
        end = last.outputs[0]
        rs = readers.get(end, [])
        if (FUSE_POOL and len(rs) == 1 and end not in outputs and hasattr(new, "fused_pool")
                and isinstance(rec.get(n.inputs[0]), np.ndarray)
                and (pooled := new.fused_pool(nodes[rs[0]], rec[n.inputs[0]])) is not None):
            new = pooled
            absorbed.add(rs[0])
            target[k] = nodes[rs[0]].outputs[0]
            for a in [a for a, o in alias.items() if o == out]:    # (nothing reads it)
                del alias[a]
                absorbed.add(a)
        if new is not r:
            runners[k] = new
    return alias, target, absorbed, runners


def _silu(nodes, rs, out, readers, outputs):
    """(Sigmoid index, Mul index) when the two readers ``rs`` of ``out``
    are y = Mul(out, Sigmoid(out)) (either order), the Sigmoid read by that
    Mul alone; else None."""
    a, b = (nodes[i] for i in rs)
    if a.op_type == "Mul":
        a, b = b, a
        rs = rs[::-1]
    if a.op_type != "Sigmoid" or b.op_type != "Mul" or a.inputs[0] != out:
        return None
    s = a.outputs[0]
    if s in outputs or readers.get(s, []) != [rs[1]] or sorted(b.inputs) != sorted([out, s]):
        return None
    return rs[0], rs[1]


def _dense_with_bias(nodes, rec, consts, outputs):
    """Dense layers: a MatMul by a constant 2-D float32 matrix, with the Add
    of a constant bias row when that is its only reader (PyTorch's Linear on
    a 3-D input exports as the two), or a Gemm with constant B and a bias row
    C (or none) and A not transposed: {MatMul or Gemm index: (Add index or
    None, one packed product with the bias)}."""
    from .kernels.dense import Dense
    from .ops.linear import bias_row, dense_weights, gemm_weights
    readers = _readers(nodes)
    found = {}
    for k, n in enumerate(nodes):
        if n.op_type == "Gemm":
            got = gemm_weights(n, consts, rec)
            out = rec.get(n.outputs[0])
            if got is not None and isinstance(out, np.ndarray) and out.dtype == np.float32:
                found[k] = (None, Dense(*got))
            continue
        if n.op_type != "MatMul":
            continue
        w = dense_weights(n, consts, rec)
        if w is None:
            continue
        rs = readers.get(n.outputs[0], [])
        add = nodes[rs[0]] if len(rs) == 1 and n.outputs[0] not in outputs else None
        if add is not None and add.op_type == "Add":
            other = [i for i in add.inputs if i != n.outputs[0]]
            row = None
            if len(other) == 1 and other[0] in consts:
                row = bias_row(consts[other[0]], w.shape[1])
            out, y = rec.get(add.outputs[0]), rec.get(n.outputs[0])
            if row is not None and isinstance(out, np.ndarray) and out.shape == y.shape:
                found[k] = (rs[0], Dense(w, row))
                continue
        found[k] = (None, Dense(w))
    return found


def _joined_inputs(nodes, dense, rec, outputs):
    """Dense layers whose input is a Concat of two float32 arrays along K
    that nothing else reads: {layer index: (Concat index, [a, b], packed W
    split at a's K rows, with the bias)}.  (A decoder's attention joins
    its state and context this way: the layer reads both, no copy.)"""
    from .kernels.dense import Dense
    readers = _readers(nodes)
    producer = {o: j for j, n in enumerate(nodes) for o in n.outputs if o}
    found = {}
    for k, (a, fn) in dense.items():
        n = nodes[k]
        j = producer.get(n.inputs[0])
        if j is None or nodes[j].op_type != "Concat" or n.inputs[0] in outputs or \
                len(readers.get(n.inputs[0], [])) != 1:
            continue
        parts = [i for i in nodes[j].inputs if i]
        arrays = [rec.get(i) for i in parts]
        if len(parts) != 2 or not all(isinstance(x, np.ndarray) and x.dtype == np.float32
                                      and x.flags.c_contiguous and x.size for x in arrays):
            continue
        x = rec[n.inputs[0]]
        if int(nodes[j].attrs.get("axis", 0)) % x.ndim != x.ndim - 1:
            continue
        ka = arrays[0].shape[-1]
        w = fn.wp_source
        bias = fn.bias[:fn.n]
        found[k] = (j, parts, Dense(w[:ka], bias), Dense(w[ka:]))
    return found


def _fold_activations(nodes, dense, groups, inner, rec, outputs):
    """A dense layer's Tanh, Relu or Sigmoid (its output's only reader, not
    part of a fused loop) computed by the product's call:
    {index of the layer's last node: index of the activation}."""
    from .kernels.dense import ACTS
    readers = _readers(nodes)
    found = {}
    for k, (a, _) in dense.items():
        last = a if a is not None else k
        o = nodes[last].outputs[0]
        rs = readers.get(o, [])
        if o in outputs or len(rs) != 1:
            continue
        act = nodes[rs[0]]
        if (act.op_type in ACTS and rs[0] not in groups and rs[0] not in inner
                and isinstance(rec.get(act.outputs[0]), np.ndarray)
                and rec[act.outputs[0]].dtype == np.float32):
            found[last] = rs[0]
    return found


def _dense_step(N, x, target, fn, code, rec, allocs, private, body, alloc, shaped,
                joined=None):
    """The step of a dense layer: ``dense_into`` writing ``target`` (or
    ``dense2_into`` reading the two parts of a joined input)."""
    from .kernels.dense import dense2_into, dense_into
    a = rec[x]
    y = rec[target]
    m = int(np.prod(a.shape[:-1], dtype=np.int64))
    allocs[target] = (tuple(y.shape), np.float32)
    tmp = None
    if fn.np_ != fn.n:
        tmp = target + "#padded"
        private[tmp] = ((m, fn.np_), np.float32)
    kd, wp, bias = N.g(dense_into, "k"), N.g(fn.wp, "w"), N.g(fn.bias, "w")

    def render():
        if joined is not None:
            xs = None
        elif a.flags.c_contiguous:
            xs = shaped(x, (m, fn.k))
        else:
            xs = f"np.ascontiguousarray({N.v(x)}).reshape({N.g((m, fn.k), 's')})"
        out = shaped(target, (m, fn.n))
        lines = alloc(target)
        if tmp is not None:
            lines += alloc(tmp)
        elif "(" in out:        # (the product's own buffer, one view of it)
            lines.append(f"    {N.v(target)}_2d = {out}")
            out = f"{N.v(target)}_2d"
        t = N.v(tmp) if tmp is not None else out
        if joined is not None:
            _, (pa, pb), da, db = joined
            xa = shaped(pa, (m, da.k))
            xb = shaped(pb, (m, db.k))
            return lines + [f"    {N.g(dense2_into, 'k')}({xa}, {xb}, {N.g(da.wp, 'w')}, "
                            f"{N.g(db.wp, 'w')}, {N.g(da.bias, 'w')}, {t}, {out}, {code})"]
        return lines + [f"    {kd}({xs}, {wp}, {bias}, {t}, {out}, {code})"]
    body.append((render, None, False, target))


def _small_step(N, n, rec, consts, nodes, producer):
    """For a Concat along the first axis of more than one element, a Softmax
    along the last axis, or a MatMul of two small computed matrices (an
    attention's scores and context): ``step(flat, shaped) -> lines`` that
    call one kernel writing the output (allocated by the caller), else None.
    Each replaces a numpy call whose own overhead was most of its time (1.5,
    3.9 and 2.5 us at a decoder step's sizes)."""
    from .kernels import dense as kd
    out = rec.get(n.outputs[0]) if len(n.outputs) == 1 else None
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.size:
        return None
    ins = [i for i in n.inputs if i]
    arrays = [rec.get(i) for i in ins]
    if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays):
        return None
    o = n.outputs[0]
    if n.op_type == "Concat":
        axis = int(n.attrs.get("axis", 0)) % out.ndim
        parts = [i for i, a in zip(ins, arrays) if a.size]
        if int(np.prod(out.shape[:axis], dtype=np.int64)) != 1 or len(parts) not in kd.CONCATS:
            return None
        if not all(rec[i].flags.c_contiguous for i in parts):
            return None
        kern = N.g(kd.CONCATS[len(parts)], "k")
        # (the kernel reads each array whole: any view of all of one will do)
        return lambda flat, shaped: [
            f"    {kern}({shaped(o, None)}, {', '.join(shaped(i, None) for i in parts)})"]
    if n.op_type in ("Softmax", "LogSoftmax"):
        from .ops.reduce import _softmax_rows
        x = arrays[0]
        axis = int(n.attrs.get("axis", -1 if n.since_version >= 13 else 1))
        if axis % x.ndim != x.ndim - 1 or not x.flags.c_contiguous:
            return None
        rows = (x.size // x.shape[-1], x.shape[-1])
        kern = N.g(_softmax_rows, "k")
        log = n.op_type == "LogSoftmax"
        return lambda flat, shaped: [
            f"    {kern}({shaped(ins[0], rows)}, {shaped(o, rows)}, {log})"]
    if n.op_type == "MatMul" and len(ins) == 2 and ins[1] not in consts:
        a, b = arrays
        if a.ndim < 2 or b.ndim < 2 or a.size * b.shape[-1] > 1 << 18:
            return None
        if a.size != a.shape[-2] * a.shape[-1] or b.size != b.shape[-2] * b.shape[-1]:
            return None         # (batched products: numpy)
        m, k, nn = a.shape[-2], a.shape[-1], b.shape[-1]
        if not a.flags.c_contiguous:
            return None
        src = None
        p = producer.get(ins[1])
        if p is not None and nodes[p].op_type == "Transpose":
            t = nodes[p]
            perm = t.attrs.get("perm")
            x = rec.get(t.inputs[0])
            r = b.ndim
            if (perm is not None and [int(v) for v in perm] == list(range(r - 2)) + [r - 1, r - 2]
                    and isinstance(x, np.ndarray) and x.flags.c_contiguous):
                src = t.inputs[0]           # the memory itself, read as rows
        if src is not None:
            kern = N.g(kd.matmul_nt, "k")
            return lambda flat, shaped: [
                f"    {kern}({shaped(ins[0], (m, k))}, {shaped(src, (nn, k))}, "
                f"{shaped(o, (m, nn))})"]
        if not b.flags.c_contiguous:
            return None
        kern = N.g(kd.matmul_nn, "k")
        return lambda flat, shaped: [
            f"    {kern}({shaped(ins[0], (m, k))}, {shaped(ins[1], (k, nn))}, "
            f"{shaped(o, (m, nn))})"]
    return None


class _Names:
    def __init__(self):
        self.var = {}
        self.globals = {"np": np, "InvalidInput": InvalidInput}

    def v(self, name):
        if name not in self.var:
            self.var[name] = f"v{len(self.var)}"
        return self.var[name]

    def g(self, value, prefix="g"):
        key = f"{prefix}{len(self.globals)}"
        self.globals[key] = value
        return key


def _pow_expr(node, consts):
    """The scalar template of a Pow whose exponent is a constant, else None."""
    e = consts.get(node.inputs[1])
    if e is None or e.size != 1:
        return None
    e = float(np.asarray(e).reshape(-1)[0])
    if e == 2.0:
        return "square({0})"
    if e == 1.0:
        return "{0}"
    return f"power({{0}}, np.float32({e!r}))"


def _fusable(node, rec, consts):
    """(template, data input names) when ``node`` can join a fused loop."""
    decl = OPS.get(node.op_type)
    if decl is None or decl.scalar is None:
        return None
    out = rec.get(node.outputs[0])
    if out is None or out.dtype != np.float32 or len(node.outputs) != 1:
        return None
    if node.op_type == "Pow":
        tmpl = _pow_expr(node, consts)
        if tmpl is None:
            return None
        ins = [node.inputs[0]]
    else:
        ins = [i for i in node.inputs if i]
        tmpl = fuse.scalar_expr(decl, node, [f"{{{k}}}" for k in range(len(ins))])
        if tmpl is None:
            return None
    for i in ins:
        a = rec.get(i)
        if a is None or a.dtype != np.float32:
            return None
        if a.shape != out.shape and a.size != 1 and i not in consts:
            return None
    return tmpl, ins


def _groups(nodes, rec, consts, outputs):
    """Fused groups: {root index: [node indices in order]} and the set of
    indices folded into a group other than as its root."""
    consumers = {}
    for k, n in enumerate(nodes):
        for i in n.inputs:
            if i:
                consumers[i] = consumers.get(i, 0) + 1
    fusable = {}
    for k, n in enumerate(nodes):
        f = _fusable(n, rec, consts)
        if f is not None:
            fusable[k] = f
    producer = {n.outputs[0]: k for k, n in enumerate(nodes) if k in fusable}
    group_of = {}
    members = {}
    for k in sorted(fusable):
        n = nodes[k]
        mine = [k]
        shape = rec[n.outputs[0]].shape
        for i in fusable[k][1]:
            p = producer.get(i)
            if p is None or consumers.get(i, 0) != 1 or i in outputs:
                continue
            if rec[nodes[p].outputs[0]].shape != shape:
                continue
            root = group_of.get(p, p)
            if root in members:
                mine = members.pop(root) + mine
        for m in mine:
            group_of[m] = k
        members[k] = mine
    groups = {root: sorted(m) for root, m in members.items()
              if len(m) > 1 or nodes[root].op_type not in _CHEAP_ALONE}
    inner = {m for ms in groups.values() for m in ms[:-1]}
    return groups, inner, fusable


def _bind(n, consts, rec):
    decl = OPS.get(n.op_type)
    if decl is None or decl.bind is None:
        return None
    try:
        return decl.bind(n, consts, rec)
    except Exception:
        return None


def _runner_call(N, n, r, outs, rec, consts):
    """A line calling runner ``r`` the general way: a dict of its inputs and ctx."""
    args = ", ".join(f"{i!r}: {N.v(i)}" for i in n.inputs
                     if i and (i in N.var) and (i in rec or i in consts))
    return f"    {', '.join(outs)}, = {N.g(r, 'r')}({{{args}}}, ctx)"


#: Bytes of reused buffers (see ``_Scratch``) one specialised run may keep per
#: thread; values beyond are allocated per run (at those sizes the allocation
#: is a small part of the op computing them).
SCRATCH_BYTES = 1 << 20

#: Ops whose bind may return a view of input 0 (checked on the recorded run):
#: such a view of a reused buffer is made once, with the buffer.
_VIEWLIKE = {"Slice", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
             "Identity", "Expand", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
             "ReduceProd"}


def _run_map(n, rec, consts, static):
    """(start, size) when output 0 of ``n`` is the run of consecutive elements
    ``start .. start + size`` of input 0 in C order (reshapes; a transpose
    that moves axes of one element; a slice of whole trailing rows), else None."""
    x, y = rec.get(n.inputs[0]) if n.inputs else None, rec.get(n.outputs[0])
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or len(n.outputs) != 1:
        return None
    if n.op_type in _VIEW_OPS:
        return (0, x.size) if n.inputs[0] in static and x.size == y.size else None
    if n.op_type == "Identity":
        return 0, x.size
    decl = OPS.get(n.op_type)
    if decl is None or not (decl.moves or n.op_type in _VIEWLIKE):
        return None
    if any(i and i not in consts for i in n.inputs[1:]) or x.size > 1 << 20 or not y.size:
        return None
    idx = np.arange(x.size, dtype=np.int64).reshape(x.shape)
    rest = [consts[i] if i else None for i in n.inputs[1:]]
    try:
        if decl.moves or n.op_type in ("Transpose", "Slice"):
            got = np.asarray(form_of(n).fn(n, [idx] + rest, 1)[0])
        else:   # a reduction over axes of one element: its bind's reshape
            b = _bind(n, consts, rec)
            got = b(idx, *rest) if b is not None else None
            if not isinstance(got, np.ndarray) or not np.shares_memory(got, idx):
                return None
    except Exception:
        return None
    if got.dtype != np.int64 or got.shape != y.shape:
        return None
    flat = got.reshape(-1)
    if not np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)):
        return None
    return int(flat[0]), int(flat.size)


def _run_expr(N, b, a, start, size, shape):
    """An expression for elements ``start .. start + size`` of ``b`` (its
    recorded value ``a``) in C order, reshaped to ``shape``."""
    want = tuple(shape)
    shape = N.g(want, "s")
    if start == 0 and size == a.size:
        return f"{N.v(b)}.reshape({shape})"
    row = a.size // a.shape[0] if a.ndim and a.shape[0] else 0
    if row and start % row == 0 and size % row == 0:       # whole rows of b
        rows = f"{N.v(b)}[{start // row}:{(start + size) // row}]"
        if (size // row,) + tuple(a.shape[1:]) == want:
            return rows
        return f"{rows}.reshape({shape})"
    return f"{N.v(b)}.reshape(-1)[{start}:{start + size}].reshape({shape})"


def _shares(result, args):
    """Whether a bind's result (an array or a tuple of them) shares memory
    with one of its array arguments."""
    outs = result if isinstance(result, (tuple, list)) else (result,)
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    return any(isinstance(o, np.ndarray) and np.shares_memory(o, a)
               for o in outs for a in arrays)


class _Scratch:
    """Buffers reused between runs, per thread, for values that do not
    escape: a kernel's output that is not returned (nor a view of it) and is
    read only by steps that do not keep or return a view of it.

    Each buffer and each view of one the run takes (a reshape, a slice, a
    flat view for a kernel's argument) is made once, when a thread first
    runs the function; the run unpacks them into its locals in one line.
    A buffer saves its ``np.empty`` (0.4 us) and every view of it (0.2 us
    each): Silero's batch-1 chunk had ~15 such lines around its convs.
    Each thread has its own buffers (sessions may run in several threads
    at once)."""

    def __init__(self, N):
        self.N = N
        self.bases = {}         # scratch base value -> (shape, dtype)
        self.entries = []       # (local name, recipe) in the order made
        self.names = {}         # recipe key -> local name

    def entry(self, key, recipe):
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = (key[1] if key[0] == "v" else
                                      f"{self.N.v(key[1])}_{len(self.entries)}")
            self.entries.append((name, recipe))
        return name

    def maker(self, read):
        """A function making one thread's tuple of the buffers and views
        ``read`` (the entries are made in order: views from their buffers)."""
        import threading
        entries = list(self.entries)
        local = threading.local()

        def make():
            made = {}
            for name, (what, *args) in entries:
                if what == "buffer":
                    shape, dtype = args
                    made[name] = np.empty(shape, dtype)
                elif what == "run":         # consecutive elements, reshaped
                    src, start, size, shape = args
                    made[name] = made[src].reshape(-1)[start:start + size].reshape(shape)
                else:                       # a bind's view of its input 0
                    fn, src, rest = args
                    made[name] = fn(made[src], *rest)
            got = tuple(made[name] for name in read)
            local.b = got
            return got
        return local, make


def compile_plan(plan, outputs, feed, optional=frozenset(), run_all=False):
    """A function ``run(feed, ctx) -> list of outputs`` equal to
    ``plan.run(outputs, feed, ctx, optional, run_all)`` for feeds of the same
    signature as ``feed`` (already validated).

    The nodes become steps (lines rendered once it is known which values get
    reused buffers, see ``_Scratch``); views of views are taken from the
    first array of the chain (``base``), and views nothing reads are dropped."""
    rec = {}
    plan.run(outputs, feed, ctx=None, optional=optional, run_all=run_all, record=rec)
    consts = plan.constants
    steps = plan._all if run_all else plan._live(outputs)
    nodes = [plan.graph.nodes[k] for k in steps]
    runners = [plan.runners[k] for k in steps]
    from .specialize import signature_values
    _, static = signature_values(plan.graph)
    outset = set(outputs)
    N = _Names()
    S = _Scratch(N)
    head = ["def run(feed, ctx):"]
    for name in plan.input_infos:
        if name in feed:
            head.append(f"    {N.v(name)} = feed[{name!r}]")
    for name, a in consts.items():
        N.var[name] = N.g(a, "c")
    relu_alias, conv_out, absorbed, runners = _fuse_conv_activation(nodes, runners, outset,
                                                                    rec)
    dense = _dense_with_bias(nodes, rec, consts, outset)
    dense_adds = {a for a, _ in dense.values()} | absorbed
    keep = [k for k in range(len(nodes)) if k not in relu_alias and k not in dense_adds]
    groups, inner, fusable = _groups([nodes[k] for k in keep], rec, consts, outset)
    groups = {keep[k]: [keep[m] for m in ms] for k, ms in groups.items()}
    inner = {keep[k] for k in inner}
    fusable = {keep[k]: f for k, f in fusable.items()}
    acts = _fold_activations(nodes, dense, groups, inner, rec, outset)
    folded = set(acts.values())
    joined = _joined_inputs(nodes, dense, rec, outset)
    folded |= {j for j, *_ in joined.values()}
    producer = {o: k for k, n in enumerate(nodes) for o in n.outputs if o}

    # base[value] = (array it is a view of, start, size): size elements from
    # start of that array in C order (start None: a view of other strides)
    base = {}
    for name, a in rec.items():
        if isinstance(a, np.ndarray) and (name in feed or name in consts):
            base[name] = (name, 0, a.size)
    allocs = {}             # value written by a kernel into a buffer -> (shape, dtype)
    private = {}            # a kernel's own temporary -> (shape, dtype)
    unsafe = set()          # values read by a step that may keep or return a view
    body = []               # (render function, target, pure)

    def fresh(names):
        for o in names:
            if o and isinstance(rec.get(o), np.ndarray):
                base[o] = (o, 0, rec[o].size)

    def reads(n, safe):
        if not safe:
            unsafe.update(i for i in n.inputs if i)

    def line(text):
        body.append((lambda: [text], None, False, None))

    def flat(name):
        b, start, size = base.get(name, (None, None, None))
        if b in S.bases and start is not None:
            return S.entry(("f", name), ("run", N.v(b), start, size, (size,)))
        return f"{N.v(name)}.reshape(-1)"

    def shaped(name, shape):
        """``name`` as an array of ``shape`` (None: any shape, C-contiguous)."""
        b, start, size = base.get(name, (None, None, None))
        if shape is None or (b in S.bases and start is not None
                             and tuple(shape) == tuple(rec[name].shape)):
            if b in S.bases and start is not None:
                return N.v(name)        # (an entry: the buffer or its view)
            elif start == 0 and b is not None and size == rec[b].size and \
                    rec[b].flags.c_contiguous:
                return N.v(b)
            else:
                return N.v(name)
        if b in S.bases and start is not None:
            return S.entry(("s", name, tuple(shape)), ("run", N.v(b), start, size,
                                                       tuple(shape)))
        if tuple(rec[name].shape) == tuple(shape):
            return N.v(name)
        if start == 0 and b is not None and size == rec[b].size:
            name = b            # (the view it is of may then go)
        return f"{N.v(name)}.reshape({N.g(tuple(shape), 's')})"

    def whole(name):
        """The array ``name`` is all of, in the same order (any shape), when
        that is C-contiguous: a loop reading it flat needs no view made."""
        b, start, size = base.get(name, (None, None, None))
        if start == 0 and b not in consts and size == rec[b].size and \
                rec[b].flags.c_contiguous:
            return N.v(b)
        return N.v(name)

    def alloc(name):
        if name in S.bases:
            return []
        shape, dtype = allocs[name] if name in allocs else private[name]
        dt = "np.float32" if np.dtype(dtype) == np.float32 else N.g(np.dtype(dtype), "t")
        return [f"    {N.v(name)} = np.empty({N.g(tuple(shape), 's')}, {dt})"]

    for k, (n, r) in enumerate(zip(nodes, runners)):
        if k in inner or k in dense_adds or k in folded:
            continue
        if k in dense:          # MatMul [+ bias Add] [+ activation]: one product
            a, fn = dense[k]
            last = a if a is not None else k
            act = acts.get(last)
            target = nodes[act if act is not None else last].outputs[0]
            code = 0 if act is None else ACTS[nodes[act].op_type]
            _dense_step(N, n.inputs[0], target, fn, code, rec, allocs, private, body,
                        alloc, shaped, joined.get(k))
            fresh([target])
            continue
        if k in relu_alias:
            N.var[n.outputs[0]] = N.v(relu_alias[k])     # the same array: no line
            if relu_alias[k] in base:
                base[n.outputs[0]] = base[relu_alias[k]]
            continue
        outs = [N.v(o) if o else "_" for o in n.outputs]
        if k in groups:
            dst = nodes[groups[k][-1]].outputs[0]
            shape, calls = _emit_group(N, [nodes[m] for m in groups[k]],
                                       [fusable[m] for m in groups[k]], rec, consts, whole)
            allocs[dst] = (shape, np.float32)
            body.append((lambda dst=dst, calls=calls: alloc(dst) + calls, None, False, dst))
            fresh([dst])
            continue
        ins = [N.v(i) if i else "None" for i in n.inputs]
        if k in conv_out and not (n.inputs[0] in rec and r.kernel_call(rec[n.inputs[0]])):
            raise RuntimeError(f"{n.describe()}: a fused MaxPool needs the kernel call")
        run = _run_map(n, rec, consts, static)
        src = base.get(n.inputs[0]) if n.inputs else None
        if run is not None and src is not None and src[1] is not None and not (
                n.outputs[0] in outset and src[0] in consts):
            # a view: taken from the array the chain of views started at
            b, start, size = src[0], src[1] + run[0], run[1]
            o = n.outputs[0]
            base[o] = (b, start, size)
            shape = tuple(rec[o].shape)

            if (start == 0 and size == rec[b].size and shape == tuple(rec[b].shape)
                    and b not in consts):
                N.var[o] = N.v(b)       # the whole array as it is: no line
                continue
            own = None          # the node's own line, when it reads the base itself
            if n.inputs[0] == b:
                if n.op_type in _VIEW_OPS:
                    own = f"    {N.v(o)} = {ins[0]}.reshape({N.g(shape, 's')})"
                elif (bd := _bind(n, consts, rec)) is not None and \
                        getattr(bd, "inline", None) is not None:
                    expr, values = bd.inline
                    names = {key: N.g(v, "x") for key, v in values.items()}
                    own = f"    {N.v(o)} = {expr.format(*ins, **names)}"

            def view(b=b, start=start, size=size, shape=shape, o=o, own=own):
                if b in S.bases:
                    return []
                return [own or f"    {N.v(o)} = {_run_expr(N, b, rec[b], start, size, shape)}"]
            body.append((view, N.v(o), True, o))
            continue
        if (n.op_type in _VIEW_OPS and n.inputs[0] in static and isinstance(
                rec.get(n.outputs[0]), np.ndarray)):
            # a reshape of a view of other strides (numpy copies if it must)
            o = n.outputs[0]
            if src is not None:
                base[o] = (src[0], None, None)
            body.append((lambda o=o, x=ins[0]: [
                f"    {N.v(o)} = {x}.reshape({N.g(tuple(rec[o].shape), 's')})"],
                N.v(o), False, o))
            continue
        if n.op_type == "Identity":
            N.var[n.outputs[0]] = ins[0]                # the same array: no line
            if n.inputs[0] in base:
                base[n.outputs[0]] = base[n.inputs[0]]
            continue
        if (step := _small_step(N, n, rec, consts, nodes, producer)) is not None:
            o = n.outputs[0]
            allocs[o] = (tuple(rec[o].shape), np.float32)
            body.append((lambda o=o, step=step: alloc(o) + step(flat, shaped), None, False, o))
            fresh([o])
            continue
        if (idx := _movement_map(n, rec, consts)) is not None:
            o = n.outputs[0]
            if isinstance(rec[o], np.ndarray) and isinstance(rec[n.inputs[0]], np.ndarray):
                # (take reads its input flat; 'clip': the indices are known
                # valid, and 'raise' would copy through a buffer for out=)
                allocs[o] = (idx.shape, rec[o].dtype)
                body.append((lambda o=o, x=n.inputs[0], m=N.g(idx, 'm'): alloc(o) + [
                    f"    {shaped(x, None)}.take({m}, None, {shaped(o, None)}, 'clip')"],
                    None, False, o))
            else:
                line(f"    {outs[0]} = {ins[0]}.reshape(-1).take({N.g(idx, 'm')})")
            fresh(n.outputs)
        elif (b := _bind(n, consts, rec)) is not None:
            if (getattr(b, "into", None) is not None and len(n.outputs) == 1
                    and isinstance(rec.get(n.outputs[0]), np.ndarray)):
                # a bound op that writes into an array it is given (a pool):
                # its output is a buffer of the run like a kernel's
                o = n.outputs[0]
                allocs[o] = (tuple(rec[o].shape), rec[o].dtype)
                call = N.g(b.into, "b")
                body.append((lambda o=o, call=call, ins=tuple(ins): alloc(o) + [
                    f"    {call}({', '.join(ins)}, {shaped(o, None)})"], None, False, o))
                fresh([o])
                continue
            args = [rec.get(i) if i in rec else consts.get(i) for i in n.inputs if i]
            try:
                shares = _shares(b(*[rec.get(i) if i in rec else consts.get(i) if i else None
                                     for i in n.inputs]), args)
            except Exception:
                shares = None       # (unknown: its inputs get no reused buffer)
            if getattr(b, "inline", None) is not None and len(n.outputs) == 1:
                expr, values = b.inline
                names = {k: N.g(v, "x") for k, v in values.items()}
                text = f"    {outs[0]} = {expr.format(*ins, **names)}"
            elif len(n.outputs) == 1:
                text = f"    {outs[0]} = {N.g(b, 'b')}({', '.join(ins)})"
            else:       # a bind of a several-output op returns a tuple
                text = f"    {', '.join(outs)}, = {N.g(b, 'b')}({', '.join(ins)})"
            src = base.get(n.inputs[0]) if n.inputs else None
            if (shares is True and n.op_type in _VIEWLIKE and len(n.outputs) == 1
                    and src is not None
                    and all(i in consts for i in n.inputs[1:] if i)):
                # a view of input 0: of a reused buffer, made once with it
                o = n.outputs[0]
                base[o] = (src[0], None, None)
                rest = tuple(consts[i] if i else None for i in n.inputs[1:])

                def aliased(o=o, b=b, rest=rest, text=text, i0=n.inputs[0]):
                    if base[o][0] in S.bases:
                        S.entry(("v", N.v(o)), ("call", b, N.v(i0), rest))
                        return []
                    return [text]
                body.append((aliased, N.v(o), True, o))
                continue
            reads(n, shares is False)
            line(text)
            fresh(n.outputs)
        elif (n.op_type in _UFUNCS and rec.get(n.inputs[0]) is not None
              and rec[n.inputs[0]].dtype == np.float32
              and rec.get(n.inputs[1]) is not None
              and rec[n.inputs[1]].dtype == np.float32):
            line(f"    {outs[0]} = {_UFUNCS[n.op_type]}({ins[0]}, {ins[1]})")
            fresh(n.outputs)
        elif (n.op_type in _UNARY and rec.get(n.inputs[0]) is not None
              and rec[n.inputs[0]].dtype == np.float32):
            line(f"    {outs[0]} = {_UNARY[n.op_type].format(ins[0])}")
            fresh(n.outputs)
        elif (hasattr(r, "kernel_call") and len(n.outputs) == 1 and n.inputs[0] in rec
              and all(not i or i in consts for i in n.inputs[1:])
              and (kc := r.kernel_call(rec[n.inputs[0]])) is not None):
            # the kernel called here (its runner's Python call cost ~1 us);
            # a read-only X (a view of a read-only feed), which the kernels'
            # signatures refuse, goes through the runner, which copies it
            kern, w, geo, shape = kc
            o = conv_out.get(k, n.outputs[0])      # (a fused pool's output)
            allocs[o] = (tuple(shape), np.float32)
            call = (N.g(kern, 'k'), N.g(w, 'w'), N.g(geo, 'g'), N.g(r.run1, 'r'))

            def conv(o=o, x=n.inputs[0], call=call):
                kern, w, geo, run1 = call
                lines = alloc(o) + ["    try:",
                                    f"        {kern}({flat(x)}, {w}, {geo}, {flat(o)})",
                                    "    except TypeError:"]
                if o in S.bases:
                    lines.append(f"        {run1}({N.v(x)}, out={N.v(o)})")
                else:
                    lines.append(f"        {N.v(o)} = {run1}({N.v(x)})")
                return lines
            body.append((conv, None, False, o))
            fresh([o])
        elif (hasattr(r, "run1") and len(n.outputs) == 1
              and all(not i or i in consts for i in n.inputs[1:])):
            reads(n, False)
            line(f"    {outs[0]} = {N.g(r.run1, 'r')}({ins[0]})")
            fresh(n.outputs)
        elif n.layer is not None and (direct := r.direct()) is not None:
            h0 = n.input(5) if len(n.inputs) > 5 and n.input(5) in rec else ""
            c0 = n.input(6) if len(n.inputs) > 6 and n.input(6) in rec else ""
            args = ", ".join([N.v(n.inputs[0]), N.v(h0) if h0 else "None",
                              N.v(c0) if c0 else "None"])
            text = "\n".join([
                "    if ctx is None:",
                f"        {', '.join(outs)}, = {N.g(direct, 'd')}({args})",
                "    else:",         # a stream: its state comes in ctx
                "    " + _runner_call(N, n, r, outs, rec, consts)])
            line(text)
            # (a layer may hand back its initial state as the final one, for
            # a sequence of no steps: no reused buffer for those)
            unsafe.update(i for i in (h0, c0) if i)
            fresh(n.outputs)
        elif type(r) is GlueRunner:
            reads(n, False)
            fn = N.g(form_of(n).fn, "f")
            node = N.g(n, "n")
            line(f"    {', '.join(outs)}, = {fn}({node}, [{', '.join(ins)}], "
                 f"{len(n.outputs)})")
            fresh(n.outputs)
        else:
            reads(n, False)
            line(_runner_call(N, n, r, outs, rec, consts))
            fresh(n.outputs)

    # which kernel outputs get reused buffers: none returned or read unsafely
    # through any view of them
    bad = {base[o][0] for o in outputs if o in base}
    bad |= {base[i][0] for i in unsafe if i in base}
    total = 0
    for name, (shape, dtype) in list(allocs.items()) + list(private.items()):
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if name in bad or name in outset or total + nbytes > SCRATCH_BYTES:
            continue
        total += nbytes
        S.bases[name] = (shape, dtype)
        S.entry(("v", N.v(name)), ("buffer", shape, dtype))
    # views of reused buffers are entries too (made in step order)
    rendered = []
    for render, target, pure, value in body:
        got = render()
        if pure and not got:
            b = base.get(value)
            if b is not None and b[0] in S.bases and b[1] is not None:
                S.entry(("v", target), ("run", N.v(b[0]), b[1], b[2],
                                        tuple(rec[value].shape)))
        rendered.append((got, target, pure))
    ret = f"    return [{', '.join(N.v(o) for o in outputs)}]"
    # drop views nothing reads (their chains now start from the base)
    import re
    used = set(re.findall(r"\bv\d+\w*", ret))
    kept = []
    for got, target, pure in reversed(rendered):
        if pure and target is not None and target not in used:
            continue
        for text in got:
            rhs = text.split(" = ", 1)[-1] if text.lstrip().startswith("v") else text
            used.update(re.findall(r"\bv\d+\w*", rhs))
        kept.append(got)
    # entries the run reads, and those they are made from
    recipe = dict(S.entries)
    need = [e for e, _ in S.entries if e in used]
    todo = list(need)
    while todo:
        r = recipe[todo.pop()]
        if r[0] != "buffer" and r[1 if r[0] == "run" else 2] not in need:
            need.append(r[1 if r[0] == "run" else 2])
            todo.append(need[-1])
    lines = list(head)
    if need:
        S.entries = [e for e in S.entries if e[0] in need]
        read = [e for e, _ in S.entries if e in used]
        local, make = S.maker(read)
        tl, mk = N.g(local, "t"), N.g(make, "a")
        lines.append(f"    {', '.join(read)}, = getattr({tl}, 'b', None) or {mk}()")
    for got in reversed(kept):
        lines.extend(got)
    lines.append(ret)
    src = "\n".join(lines) + "\n"
    ns = dict(N.globals)
    exec(compile(src, "<fastlstm specialised run>", "exec"), ns)
    fn = ns["run"]
    fn.source = src
    return fn


def _emit_group(N, nodes, fus, rec, consts, whole=None):
    """(output shape, lines) that run one fused group (the caller allocates
    its root's output)."""
    ext, scalar, cblock, strided = [], set(), [], set()
    rec_of = {}
    local, body = {}, []
    slots = {}
    out = rec[nodes[-1].outputs[0]]
    for n, (tmpl, ins) in zip(nodes, fus):
        args = []
        for i in ins:
            if i in local:
                args.append(local[i])
                continue
            if i not in slots:
                a = rec[i]
                if i in consts and a.size == 1:
                    v = float(np.asarray(a, np.float32).reshape(-1)[0])
                    slots[i] = f"np.float32({v!r})"
                elif i in consts:
                    cblock.append(np.broadcast_to(a, out.shape).reshape(-1))
                    slots[i] = f"c{len(cblock) - 1}"
                else:
                    pos = len(ext)
                    if not isinstance(a, np.ndarray):   # a numpy scalar (numpy's
                        ext.append(f"np.asarray({N.v(i)})")     # result for rank-0 inputs)
                    elif a.flags.c_contiguous or a.size == 1:
                        ext.append((whole or N.v)(i) if a.flags.c_contiguous else
                                   f"np.ascontiguousarray({N.v(i)})")
                    else:       # a view of other strides (of the output's shape)
                        ext.append(N.v(i))
                        strided.add(pos)
                        rec_of[pos] = a
                    if a.size == 1 and out.size != 1:
                        scalar.add(pos)
                    slots[i] = f"a{pos}"
            args.append(slots[i])
        t = f"t{len(body)}"
        body.append(f"{t} = {tmpl.format(*args)}")
        local[n.outputs[0]] = t
    rank = out.ndim
    if strided:     # the views, their axes merged where their strides allow
        views = [(pos, rec_of[pos]) for pos in sorted(strided)]
        shape = fuse.collapse(out.shape, [a.strides for _, a in views])
        rank = len(shape)
        sname = N.g(shape, "s")
        for pos, _ in views:
            ext[pos] = f"{ext[pos]}.reshape({sname})"
    src = fuse.kernel_source(len(ext), scalar, body[:-1], body[-1].split(" = ", 1)[1],
                             len(cblock), strided, rank)
    kern = N.g(fuse.compile_kernel(src), "k")
    dst = N.v(nodes[-1].outputs[0])
    call = [dst] + ext
    if cblock:
        call.append(N.g(np.ascontiguousarray(np.stack(cblock)), "c"))
    return tuple(out.shape), [f"    {kern}({', '.join(call)})"]
