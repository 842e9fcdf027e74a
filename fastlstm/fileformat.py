"""The ``.fastlstm`` file: a planned graph with its weights already packed.

Layout (all integers little-endian)::

    bytes 0-7    magic  b"FASTLSTM"
    bytes 8-11   format version (uint32)
    bytes 12-15  header length L (uint32)
    bytes 16-47  SHA-256 of the header
    bytes 48-    header: L bytes of UTF-8 JSON
    then         payload, starting at the next multiple of 64: every array,
                 each at a 64-byte aligned offset

The header holds the format and fastlstm versions, the payload's size and
SHA-256, the graph (inputs, outputs, nodes with their validated attributes;
a recurrent node's ``layer``: its spec, packed weights and Y layout) and
metadata; arrays appear in it as
``{"array": index}`` into a table of (dtype, shape, offset).  Loading reads the
file once (or maps it), checks magic, version, size and checksum before
building anything, and uses numpy views into the payload, so it needs neither
the ``onnx`` package nor any repacking.  No pickle anywhere.
"""
import hashlib
import json
import mmap
import os
import struct
from dataclasses import asdict

import numpy as np

from . import config
from .errors import InvalidModel
from .ir import DIRECTIONS, ELEM_TYPES, Graph, Node, RecurrentLayer, RecurrentSpec, ValueInfo
from .kernels import common
from .pack import PackedDirection, PackedLayer, pack_graph

MAGIC = b"FASTLSTM"
#: 3: the header records the kernels' ABI ("kernel_abi": tile, panel and the
#: fields of the parameter blocks, ``kernels.common.abi``), and a file is read
#: only by kernels with the same one.  2: a recurrent node's spec, packed
#: weights and Y layout are one "layer" entry (1: node attributes "spec",
#: "packed", "y_tbdh"; a spec "flag" whose meaning was the op's).  Versions 1
#: and 2 are still read: they were written for ``_ABI_BEFORE_3``.  4: a layer's
#: "packed" may be reduced-precision weights ({"kind": "lowp", ...},
#: ``pack_lowp.encode``).
FORMAT_VERSION = 4
#: The kernel ABI of every file of format versions 1 and 2.
_ABI_BEFORE_3 = {"tile": 16, "panel": 64,
                 "ip": ["h", "hp", "act0", "act1", "act2", "flag", "has_clip", "batch", "p0",
                        "p1", "phase"],
                 "fp": ["clip", "alpha0", "beta0", "alpha1", "beta1", "alpha2", "beta2"]}
_ALIGN = 64
_FIXED = 48          # magic, version, header length, header SHA-256
_DTYPES = {"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"}


def is_packed(data):
    """True when ``data`` (bytes) starts like a .fastlstm file."""
    return bytes(data[:len(MAGIC)]) == MAGIC


class _Writer:
    def __init__(self):
        self.arrays = []
        self.table = []
        self.size = 0

    def add(self, a):
        a = np.asarray(a)
        if not a.flags.c_contiguous:     # (ascontiguousarray would make 0-d arrays 1-d)
            a = a.copy(order="C")
        if a.dtype.name not in _DTYPES:
            raise InvalidModel(f"cannot store an array of dtype {a.dtype}")
        self.size = -(-self.size // _ALIGN) * _ALIGN
        self.table.append({"dtype": a.dtype.name, "shape": list(a.shape), "offset": self.size})
        self.arrays.append((self.size, a))
        self.size += a.nbytes
        return {"array": len(self.table) - 1}

    def payload(self):
        buf = bytearray(self.size)
        for off, a in self.arrays:
            buf[off:off + a.nbytes] = a.tobytes()
        return bytes(buf)


_PACKED_DIR_ARRAYS = ("R", "rb", "P", "ip", "fp")


def _encode_packed(p, w):
    if not isinstance(p, PackedLayer):      # reduced precision (fastlstm.pack_lowp)
        from .pack_lowp import encode
        return encode(p, w.add)
    return {"W": w.add(p.W), "bias": w.add(p.bias), "hidden": p.hidden,
            "input_size": p.input_size,
            "dirs": [{k: w.add(getattr(d, k)) for k in _PACKED_DIR_ARRAYS} for d in p.dirs]}


def _encode_layer(layer, w):
    """JSON-able form of a node's ir.RecurrentLayer; arrays go to the payload."""
    return {"spec": asdict(layer.spec), "y_tbdh": layer.y_tbdh,
            "packed": None if layer.packed is None else _encode_packed(layer.packed, w)}


def _encode(value, w):
    """JSON-able form of an attribute value; arrays go to the payload."""
    if isinstance(value, np.ndarray):
        return w.add(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v, w) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Graph):
        return {"subgraph": _encode_graph(value, w)}
    raise InvalidModel(f"cannot store an attribute of type {type(value).__name__}")


def _encode_graph(graph, w):
    """JSON-able form of a graph (the model's, or an If branch's); arrays to the payload."""
    nodes = []
    for n in graph.nodes:
        node = {"op_type": n.op_type, "name": n.name, "inputs": list(n.inputs),
                "outputs": list(n.outputs), "domain": n.domain,
                "since_version": n.since_version,
                "attrs": {k: _encode(v, w) for k, v in n.attrs.items()}}
        if n.layer is not None:
            node["layer"] = _encode_layer(n.layer, w)
        nodes.append(node)
    doc = {"inputs": [_vi(v) for v in graph.inputs],
           "outputs": [_vi(v) for v in graph.outputs],
           "nodes": nodes, "initializers": {k: w.add(v) for k, v in graph.initializers.items()},
           "opsets": graph.opsets}
    if graph.captures:
        doc["captures"] = list(graph.captures)
    return doc


def _array(ref, arrays):
    """The array a ``{"array": index}`` reference names (an index into the table)."""
    i = ref.get("array") if isinstance(ref, dict) else None
    if type(i) is not int or not 0 <= i < len(arrays):
        raise InvalidModel(f"bad array reference {ref!r} (the table has {len(arrays)} arrays)")
    return arrays[i]


def _decode_packed(p, arrays):
    if p.get("kind") == "lowp":
        from .pack_lowp import decode
        return decode(p, lambda ref: _array(ref, arrays))
    return PackedLayer(W=_array(p["W"], arrays), bias=_array(p["bias"], arrays),
                       dirs=[PackedDirection(**{k: _array(d[k], arrays)
                                                for k in _PACKED_DIR_ARRAYS})
                             for d in p["dirs"]],
                       hidden=p["hidden"], input_size=p["input_size"])


def _decode_spec(value, version):
    s = dict(value)
    if version == 1:        # one "flag", meaning the op's own flag attribute
        flag = s.pop("flag", 0)
        from .ops.recurrent_ops import RECURRENT_OPS
        desc = RECURRENT_OPS.get(s.get("op"))
        if desc is not None and desc.flag_name:
            s[desc.flag_name] = flag
        elif flag != 0:
            raise InvalidModel(f"recurrent spec of op {s.get('op')!r} with flag {flag!r}")
    s["acts"] = tuple(tuple(tuple(t) for t in d) for d in s["acts"])
    s["activation_names"] = tuple(s["activation_names"])
    return RecurrentSpec(**s)


def _decode_layer(value, arrays, version):
    """An ir.RecurrentLayer from its JSON (``_encode_layer``)."""
    packed = value["packed"]
    y_tbdh = value["y_tbdh"]
    if not isinstance(y_tbdh, bool):
        raise InvalidModel(f"y_tbdh {y_tbdh!r} must be a bool")
    return RecurrentLayer(spec=_decode_spec(value["spec"], version), y_tbdh=y_tbdh,
                          packed=None if packed is None else _decode_packed(packed, arrays))


def _decode_v1_layer(attrs, arrays):
    """A version-1 node's recurrent attributes ("spec", "packed", "y_tbdh") as
    (ir.RecurrentLayer, the remaining attributes)."""
    attrs = dict(attrs)
    spec = attrs.pop("spec", None)
    packed = attrs.pop("packed", None)
    if not isinstance(spec, dict) or "recurrent_spec" not in spec or (
            packed is not None and (not isinstance(packed, dict)
                                    or "packed_layer" not in packed)):
        raise InvalidModel("recurrent node without its validated attributes")
    return _decode_layer({"spec": spec["recurrent_spec"], "y_tbdh": attrs.pop("y_tbdh", False),
                          "packed": None if packed is None else packed["packed_layer"]},
                         arrays, 1), attrs


def _decode(value, arrays, version=FORMAT_VERSION):
    if isinstance(value, dict):
        if "array" in value:
            return _array(value, arrays)
        if "subgraph" in value and len(value) == 1:
            return _decode_graph(value["subgraph"], arrays, version, {})
        raise InvalidModel(f"unknown attribute encoding {sorted(value)}")
    if isinstance(value, list):
        return [_decode(v, arrays, version) for v in value]
    return value


def _decode_graph(g, arrays, version, metadata):
    """An ir.Graph from its JSON (``_encode_graph``)."""
    from .ops.recurrent_ops import RECURRENT_OPS

    def vi(v):
        return ValueInfo(v["name"], v["elem_type"],
                         None if v["shape"] is None else tuple(v["shape"]))
    if not isinstance(g, dict) or not isinstance(g["nodes"], list) or not all(
            isinstance(n, dict) and isinstance(n["attrs"], dict)
            and isinstance(n["inputs"], list) and isinstance(n["outputs"], list)
            for n in g["nodes"]):
        raise InvalidModel("the graph's node list is malformed")
    nodes = []
    for n in g["nodes"]:
        attrs, layer = n["attrs"], None
        if version == 1:
            if n["op_type"] in RECURRENT_OPS:
                layer, attrs = _decode_v1_layer(attrs, arrays)
        elif "layer" in n:
            layer = _decode_layer(n["layer"], arrays, version)
        nodes.append(Node(op_type=n["op_type"], name=n["name"], inputs=tuple(n["inputs"]),
                          outputs=tuple(n["outputs"]),
                          attrs={k: _decode(v, arrays, version) for k, v in attrs.items()},
                          domain=n["domain"], since_version=n["since_version"],
                          layer=layer))
    captures = g.get("captures", [])
    if not isinstance(captures, list) or not all(isinstance(c, str) for c in captures):
        raise InvalidModel("malformed captures list")
    return Graph(inputs=[vi(v) for v in g["inputs"]], outputs=[vi(v) for v in g["outputs"]],
                 nodes=nodes,
                 initializers={k: _array(v, arrays) for k, v in g["initializers"].items()},
                 opsets=g["opsets"], metadata=metadata, captures=tuple(captures))


def _vi(v):
    return {"name": v.name, "elem_type": v.elem_type,
            "shape": None if v.shape is None else list(v.shape)}


def dumps(graph):
    """Serialize a packed ir.Graph to bytes."""
    from . import __version__
    from .simplify import simplify
    graph = pack_graph(simplify(graph))
    w = _Writer()
    encoded = _encode_graph(graph, w)
    payload = w.payload()
    version = FORMAT_VERSION
    header = {
        "format_version": version, "fastlstm_version": __version__,
        "tile": config.TILE, "panel": config.PANEL, "kernel_abi": common.abi(),
        "payload_size": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "arrays": w.table,
        "graph": encoded,
        "metadata": graph.metadata,
    }
    hb = json.dumps(header, separators=(",", ":")).encode()
    head = MAGIC + struct.pack("<II", version, len(hb)) + hashlib.sha256(hb).digest() + hb
    pad = -len(head) % _ALIGN
    return head + b"\0" * pad + payload


def save(graph, path):
    """Write a packed ir.Graph to ``path`` (written to a temporary name, then renamed).

    ``path`` must be a new name or an existing regular file: the rename would
    replace a device, FIFO, socket or symbolic link with a regular file, so
    those are refused (FastLSTMError), as is a folder that does not exist.
    """
    import stat
    from .errors import FastLSTMError
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FastLSTMError(f"cannot write {path!r}: folder {folder!r} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise FastLSTMError(f"cannot write {path!r}: it exists and is {kind} (a .fastlstm "
                            f"file replaces only a regular file)")
    data = dumps(graph)
    # a fresh name, created exclusively (never through a link planted there)
    tmp = f"{path}.tmp{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return len(data)


def read_header(data):
    """Parse and check the fixed part and the JSON header; returns (header, payload offset)."""
    if len(data) < _FIXED or bytes(data[:8]) != MAGIC:
        raise InvalidModel("not a .fastlstm file (bad magic or too short)")
    version, hlen = struct.unpack("<II", bytes(data[8:16]))
    if version > FORMAT_VERSION:
        raise InvalidModel(f"this .fastlstm file has format version {version}; this fastlstm "
                           f"reads version {FORMAT_VERSION} and older: upgrade fastlstm or "
                           f"convert the ONNX model again")
    if version < 1:
        raise InvalidModel(f"invalid .fastlstm format version {version}")
    if _FIXED + hlen > len(data):
        raise InvalidModel(".fastlstm file is truncated (header cut short)")
    hb = bytes(data[_FIXED:_FIXED + hlen])
    if hashlib.sha256(hb).digest() != bytes(data[16:_FIXED]):
        raise InvalidModel(".fastlstm header checksum mismatch: the file is corrupt")
    try:
        header = json.loads(hb.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidModel(f".fastlstm header is corrupt: {e}") from None
    start = -(-(_FIXED + hlen) // _ALIGN) * _ALIGN
    return header, start


def _check_layer(node):
    """The kernels trust a packed layer's sizes: check every one against the spec."""
    from .kernels import common
    from .pack import padded
    layer, spec = node.layer.packed, node.layer.spec
    if getattr(layer, "mode", None) is not None:    # reduced precision (fastlstm.pack_lowp)
        from .pack_lowp import check_layer
        msg = check_layer(layer, spec)
        if msg:
            raise InvalidModel(f"{node.describe()}: {msg}")
        return
    if not isinstance(layer, PackedLayer):
        raise InvalidModel(f"{node.describe()}: packed weights of the wrong kind")
    H, I, D = layer.hidden, layer.input_size, spec.num_directions
    if not _is_int(H) or not _is_int(I) or H < 1 or I < 0 or not isinstance(layer.dirs, list):
        raise InvalidModel(f"{node.describe()}: bad packed layer sizes")
    Hp = padded(H)
    want = spec.desc.packed_sizes(H, I, D)
    ok = (layer.W.size == want["W"] and layer.bias.size == want["bias"]
          and layer.W.dtype == np.float32 and layer.bias.dtype == np.float32
          and len(layer.dirs) == D)
    for d in layer.dirs:
        for k in ("R", "rb", "P"):
            a = getattr(d, k)
            ok = ok and a.dtype == np.float32 and a.size == want[k]
        ok = ok and d.fp.dtype == np.float32 and d.fp.size == common.FP_LEN
        ok = ok and d.ip.dtype == np.int64 and d.ip.size == common.IP_LEN
        if ok:
            ip = d.ip
            ok = (ip[common.IP_H] == H and ip[common.IP_HP] == Hp and ip[common.IP_P0] == 0
                  and ip[common.IP_P1] == Hp // config.TILE
                  and all(0 <= ip[common.IP_ACT0 + k] <= 10 for k in range(3)))
    if not ok:
        raise InvalidModel(f"{node.describe()}: packed weights do not match hidden_size={H}, "
                           f"input_size={I}, {D} direction(s)")


#: ONNX attribute types of the attributes the op table accepts, by name (ONNX
#: gives every attribute name one type across the ops fastlstm runs; a test
#: checks this table against the ONNX schemas).  The file format cannot use
#: onnx at load, so the kinds are written down here.
ATTR_KINDS = {
    "allowzero": "int", "alpha": "float", "axes": "ints", "axis": "int", "beta": "float",
    "end": "int", "ends": "ints", "is_test": "int", "k": "int", "keepdims": "int",
    "largest": "int", "max": "float", "min": "float", "noop_with_empty_axes": "int",
    "num_outputs": "int", "perm": "ints", "ratio": "float", "reduction": "string",
    "round_mode": "string", "saturate": "int", "seed": "int", "select_last_index": "int",
    "sorted": "int", "split": "ints", "start": "int", "starts": "ints", "to": "int",
    "transA": "int", "transB": "int", "value": "tensor", "mode": "string",
    "epsilon": "float", "kernel_shape": "ints", "pads": "ints", "strides": "ints",
    "dilations": "ints", "group": "int", "auto_pad": "string", "ceil_mode": "int",
    "count_include_pad": "int", "storage_order": "int", "momentum": "float",
    "spatial": "int", "stash_type": "int", "then_branch": "graph", "else_branch": "graph",
    "body": "graph", "fmod": "int", "batch_dims": "int", "exclusive": "int",
    "reverse": "int", "detect_negative": "int", "detect_positive": "int",
    "blocksize": "int", "output_dtype": "int", "antialias": "int", "block_size": "int",
    "coordinate_transformation_mode": "string", "cubic_coeff_a": "float",
    "exclude_outside": "int", "extrapolation_value": "float",
    "keep_aspect_ratio_policy": "string", "nearest_mode": "string",
    "output_padding": "ints", "output_shape": "ints", "training_mode": "int",
    "num_scan_inputs": "int", "scan_input_axes": "ints", "scan_input_directions": "ints",
    "scan_output_axes": "ints", "scan_output_directions": "ints", "directions": "ints",
}
#: Attributes ONNX requires, by op (required where the node's form has them:
#: Unsqueeze 1's axes, not 13's; a test checks this against the ONNX schemas).
REQUIRED_ATTRS = {
    "AveragePool": ("kernel_shape",), "MaxPool": ("kernel_shape",), "Cast": ("to",),
    "Concat": ("axis",), "If": ("else_branch", "then_branch"), "Loop": ("body",),
    "Pad": ("pads",), "Scan": ("body", "num_scan_inputs"), "Slice": ("ends", "starts"),
    "TopK": ("k",), "Unsqueeze": ("axes",),
}

#: The few attributes whose type depends on the op.
ATTR_KINDS_BY_OP = {("Pad", "value"): "float"}


def _is_int(v):
    return type(v) is int or (isinstance(v, np.integer) and not isinstance(v, np.bool_))


def _kind_ok(kind, v):
    if kind == "int":
        return _is_int(v)
    if kind == "float":
        return _is_int(v) or isinstance(v, (float, np.floating))
    if kind == "ints":
        return isinstance(v, list) and all(_is_int(x) for x in v)
    if kind == "floats":
        return isinstance(v, list) and all(_is_int(x) or isinstance(x, float) for x in v)
    if kind == "string":
        return isinstance(v, str)
    if kind == "tensor":
        return isinstance(v, np.ndarray)
    if kind == "graph":
        return isinstance(v, Graph)
    return False


def _check_spec(node):
    """The validated attributes of a recurrent node, as the kernels rely on them."""
    from .kernels import common
    from .ops.quantized import RECURRENT_AS
    from .ops.recurrent_ops import RECURRENT_OPS

    def bad(what):
        raise InvalidModel(f"{node.describe()}: {what}")
    if not isinstance(node.layer, RecurrentLayer) or not isinstance(node.layer.spec,
                                                                   RecurrentSpec):
        bad("recurrent node without its validated attributes")
    spec = node.layer.spec
    if spec.op != RECURRENT_AS.get(node.op_type, node.op_type) or spec.op not in RECURRENT_OPS:
        bad(f"spec of op {spec.op!r} on a {node.op_type} node")
    desc = spec.desc
    if spec.direction not in DIRECTIONS:
        bad(f"direction {spec.direction!r}")
    if spec.hidden_size is not None and (not _is_int(spec.hidden_size) or spec.hidden_size < 1):
        bad(f"hidden_size {spec.hidden_size!r}")
    if not _is_int(spec.layout) or spec.layout not in (0, 1):
        bad(f"layout {spec.layout!r} must be 0 or 1")
    if spec.clip is not None and not (isinstance(spec.clip, (int, float))
                                      and not isinstance(spec.clip, bool) and spec.clip >= 0):
        bad(f"clip {spec.clip!r} must be a number >= 0")
    for name in ("input_forget", "linear_before_reset"):
        v = getattr(spec, name)
        if not _is_int(v) or v not in ((0, 1) if name == desc.flag_name else (0,)):
            bad(f"{name} {v!r}")
    n = desc.n_activations
    acts = spec.acts
    if not isinstance(acts, tuple) or len(acts) != spec.num_directions or any(
            not isinstance(d, tuple) or len(d) != n or any(
                len(t) != 3 or not _is_int(t[0]) or not 0 <= t[0] <= 10
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                           for x in t[1:]) for t in d) for d in acts):
        bad(f"activations {acts!r} are not {n} (code, alpha, beta) per direction")
    names = spec.activation_names
    if not isinstance(names, tuple) or len(names) != n * spec.num_directions or not all(
            isinstance(x, str) for x in names):
        bad(f"activation names {names!r}")
    ins, outs = len(desc.inputs), len(desc.outputs)
    if len(node.inputs) > ins or len(node.outputs) > outs:
        bad(f"{len(node.inputs)} inputs and {len(node.outputs)} outputs; {spec.op} has at "
            f"most {ins} and {outs}")
    if not node.input(0):
        bad("input X is missing")
    if node.attrs:
        bad(f"unknown attributes {sorted(node.attrs)}")
    layer = node.layer.packed
    if layer is not None:
        _check_layer(node)
        if any(node.input(i) for i in desc.weight_inputs):
            bad("packed weights and weight inputs at once")
        if spec.hidden_size is not None and spec.hidden_size != layer.hidden:
            bad(f"hidden_size {spec.hidden_size} but weights packed for {layer.hidden}")
        for d, pd in zip(acts, layer.dirs):
            ip = pd.ip
            if (any(ip[common.IP_ACT0 + k] != d[k][0] for k in range(n))
                    or ip[common.IP_FLAG] != spec.op_flag
                    or ip[common.IP_HAS_CLIP] != (spec.clip is not None)):
                bad("packed kernel parameters contradict the node's attributes")
    elif not node.input(1) or not node.input(2):
        bad("inputs W and R are required (the weights are not packed)")


def _check_recurrent_shapes(node, graph):
    """Declared shapes of the graph inputs and constants a layer reads, against it."""
    spec, layer = node.layer.spec, node.layer.packed
    D = spec.num_directions
    H = node.layer.hidden_size
    infos = {v.name: v for v in graph.inputs}
    consts = graph.initializers
    # X [T, B, I] (layout 0) or [B, T, I]; states [D, B, H] or [B, D, H]
    d_axis = 0 if spec.layout == 0 else 1
    want = {0: {2: layer.input_size if layer is not None else None}, 5: {d_axis: D, 2: H},
            6: {d_axis: D, 2: H}}
    for pos, name in enumerate(node.inputs):
        if not name:
            continue
        label = spec.desc.inputs[pos]
        vi = infos.get(name)
        if vi is not None:
            et = 6 if pos == 4 else 1
            if vi.elem_type != et:
                raise InvalidModel(f"{node.describe()}: input {label} '{name}' is declared "
                                   f"with element type {vi.elem_type}, expected {et}")
            shape = vi.shape
        elif name in consts:
            a = consts[name]
            if a.dtype != (np.int32 if pos == 4 else np.float32):
                raise InvalidModel(f"{node.describe()}: constant {label} '{name}' has dtype "
                                   f"{a.dtype}")
            shape = a.shape
        else:
            continue
        if shape is None:
            continue
        rank = 1 if pos == 4 else 2 if pos in (3, 7) else 3
        if len(shape) != rank:
            raise InvalidModel(f"{node.describe()}: {label} '{name}' has rank {len(shape)}, "
                               f"expected {rank}")
        for axis, size in want.get(pos, {}).items():
            if size is not None and _is_int(shape[axis]) and shape[axis] != size:
                raise InvalidModel(f"{node.describe()}: {label} '{name}' has size "
                                   f"{shape[axis]} on axis {axis}, the layer needs {size}")


def _check_vi(v, what):
    if not isinstance(v, ValueInfo) or not isinstance(v.name, str) or not v.name:
        raise InvalidModel(f"{what} without a name")
    if not _is_int(v.elem_type) or (v.elem_type not in ELEM_TYPES and v.elem_type != 0):
        raise InvalidModel(f"{what} '{v.name}' has an unknown element type {v.elem_type!r}")
    if v.shape is not None and not all(
            d is None or isinstance(d, str) or (_is_int(d) and d >= 0) for d in v.shape):
        raise InvalidModel(f"{what} '{v.name}' has a malformed shape {list(v.shape)!r}")


def _check_subgraph_arity(n):
    """If, Loop and Scan: the branches' or body's inputs and outputs against the
    node's (as their import builders check them; the node's inputs end with the
    body's captures)."""
    def bad(what):
        raise InvalidModel(f"{n.describe()}: {what}")
    if n.op_type == "If":
        for key in ("then_branch", "else_branch"):
            g = n.attrs[key]
            if g.inputs or len(g.outputs) != len(n.outputs):
                bad(f"{key} has {len(g.inputs)} inputs and {len(g.outputs)} outputs; it "
                    f"takes none and gives the node's {len(n.outputs)}")
    elif n.op_type in ("Loop", "Scan"):
        body = n.attrs["body"]
        caps = len(dict.fromkeys(body.captures))
        extra = 1 if n.op_type == "Loop" else 0     # a Loop body's condition output
        if len(body.inputs) + caps != len(n.inputs) or \
                len(body.outputs) != len(n.outputs) + extra:
            bad(f"the body's {len(body.inputs)} inputs, {caps} captured values and "
                f"{len(body.outputs)} outputs do not fit the node's {len(n.inputs)} inputs "
                f"and {len(n.outputs)} outputs")


def validate_graph(graph, outer=()):
    """Check a loaded graph the way ONNX import checks a model: every node an op
    fastlstm runs with attributes of the right names and types, nodes in
    topological order (so no cycles), every value read produced exactly once
    before, every graph output produced, packed layers and the inputs they read
    consistent.  A file that passes runs or fails only on its inputs."""
    from .ops import RUNNERS
    from .ops.quantized import MS_DOMAIN, MS_OPS, RECURRENT_AS
    from .ops.recurrent_ops import RECURRENT_OPS
    from .ops.table import OPS
    for v in graph.inputs:
        _check_vi(v, "graph input")
    for v in graph.outputs:
        _check_vi(v, "graph output")
    if graph.inputs and any(v.elem_type == 0 for v in graph.inputs):
        raise InvalidModel("a graph input has no element type")
    if not isinstance(graph.opsets, dict) or not all(
            isinstance(k, str) and _is_int(v) for k, v in graph.opsets.items()):
        raise InvalidModel(f"malformed opsets {graph.opsets!r}")
    if not isinstance(graph.metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in graph.metadata.items()):
        raise InvalidModel("malformed metadata (a dict of strings expected)")
    defined = {name: "outer scope" for name in outer}
    for v in graph.inputs:
        if v.name in defined and defined[v.name] != "outer scope":
            raise InvalidModel(f"graph input '{v.name}' is declared twice")
        defined[v.name] = "graph input"
    for name, a in graph.initializers.items():
        if not isinstance(name, str) or not name or not isinstance(a, np.ndarray):
            raise InvalidModel(f"malformed initializer {name!r}")
        if name in defined:
            raise InvalidModel(f"'{name}' is both a graph input and a constant")
        defined[name] = "constant"
    for k, n in enumerate(graph.nodes):
        if not (isinstance(n.op_type, str) and isinstance(n.name, str)
                and isinstance(n.domain, str) and _is_int(n.since_version)
                and isinstance(n.attrs, dict)
                and all(isinstance(i, str) for i in n.inputs)
                and all(isinstance(o, str) for o in n.outputs)):
            raise InvalidModel(f"node {k} is malformed")
        if n.op_type not in RUNNERS or (n.domain not in ("", "ai.onnx") and
                                         (n.domain != MS_DOMAIN or n.op_type not in MS_OPS)):
            raise InvalidModel(f"{n.describe()}: not an op fastlstm runs")
        for i in n.inputs:
            if i and i not in defined:
                raise InvalidModel(f"{n.describe()} reads '{i}', which no graph input, "
                                   f"constant or earlier node produces (nodes must be in "
                                   f"topological order, without cycles)")
        if n.op_type in RECURRENT_OPS or n.op_type in RECURRENT_AS:
            _check_spec(n)
            _check_recurrent_shapes(n, graph)
        elif n.layer is not None:
            raise InvalidModel(f"{n.describe()}: a recurrent layer on a {n.op_type} node")
        else:
            form = OPS[n.op_type].form(n.since_version)
            if form is None:
                raise InvalidModel(f"{n.describe()}: no form of {n.op_type} for this version")
            for key in REQUIRED_ATTRS.get(n.op_type, ()):
                if key in form.attrs and key not in n.attrs:
                    raise InvalidModel(f"{n.describe()}: required attribute '{key}' is missing")
            for key, value in n.attrs.items():
                if key not in form.attrs:
                    raise InvalidModel(f"{n.describe()}: attribute '{key}' is not one of "
                                       f"{n.op_type}'s")
                kind = ATTR_KINDS_BY_OP.get((n.op_type, key), ATTR_KINDS.get(key))
                if kind is not None and not _kind_ok(kind, value):
                    raise InvalidModel(f"{n.describe()}: attribute '{key}' must be of type "
                                       f"{kind}, got {value!r:.60}")
                if isinstance(value, Graph):
                    # a branch or body sees the outer values it captures, and those
                    # are the node's inputs (so they are computed before it runs)
                    caps = value.captures
                    if not isinstance(caps, tuple) or not all(
                            isinstance(c, str) and c in defined and c in n.inputs
                            for c in caps):
                        raise InvalidModel(f"{n.describe()}: attribute '{key}' captures "
                                           f"{list(caps)!r:.80}, which must be values "
                                           f"defined before the node and among its inputs")
                    validate_graph(value, outer=caps)
            _check_subgraph_arity(n)
            last = len(n.inputs)
            while last and not n.inputs[last - 1]:
                last -= 1
            lo, hi = form.inputs
            if last < lo or len(n.inputs) > hi or not all(n.inputs[:lo]):
                raise InvalidModel(f"{n.describe()} has inputs {list(n.inputs)}; "
                                   f"{n.op_type} takes {lo} to {hi}")
            if not form.outputs[0] <= len(n.outputs) <= form.outputs[1]:
                raise InvalidModel(f"{n.describe()} has {len(n.outputs)} outputs; "
                                   f"{n.op_type} has {form.outputs[0]} to {form.outputs[1]}")
        for o in n.outputs:
            if o:
                if o in defined:
                    raise InvalidModel(f"{n.describe()} writes '{o}', which is already "
                                       f"produced by a {defined[o]}")
                defined[o] = "node"
    for v in graph.outputs:
        if v.name not in defined:
            raise InvalidModel(f"graph output '{v.name}' is not produced by any node")


def loads(data):
    """Build an ir.Graph from .fastlstm bytes (or a memory map).

    Beyond the checksums (which only catch damage), the whole graph is
    validated (``validate_graph``), so a file whose contents are inconsistent
    is refused here with InvalidModel, never later in ``run``."""
    header, start = read_header(data)
    try:
        size = header["payload_size"]
        if len(data) - start != size:
            raise InvalidModel(f".fastlstm file is truncated or padded: payload has "
                               f"{len(data) - start} bytes, the header says {size}")
        payload = memoryview(data)[start:start + size]
        if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise InvalidModel(".fastlstm payload checksum mismatch: the file is corrupt")
        version = struct.unpack("<I", bytes(data[8:12]))[0]
        abi = header["kernel_abi"] if version >= 3 else _ABI_BEFORE_3
        if abi != common.abi():
            raise InvalidModel(f".fastlstm file was packed for other kernels (tile "
                               f"{abi.get('tile')}, panel {abi.get('panel')}, parameters "
                               f"{abi.get('ip')} and {abi.get('fp')}; these read "
                               f"{common.abi()}): convert the model again")
        arrays = []
        for t in header["arrays"]:
            if t["dtype"] not in _DTYPES:
                raise InvalidModel(f"array of unknown dtype {t['dtype']!r}")
            if not isinstance(t["shape"], list) or not all(
                    type(d) is int and d >= 0 for d in t["shape"]) or type(t["offset"]) is not int:
                raise InvalidModel(f"array table entry {t!r} is malformed")
            dt = np.dtype(t["dtype"])
            count = int(np.prod(t["shape"], dtype=np.int64))
            if t["offset"] < 0 or t["offset"] + count * dt.itemsize > size:
                raise InvalidModel("array table points outside the payload")
            a = np.frombuffer(payload, dtype=dt, count=count, offset=t["offset"])
            arrays.append(a.reshape(t["shape"]))
        graph = _decode_graph(header["graph"], arrays, version,
                              dict(header.get("metadata", {})))
        validate_graph(graph)
        return graph
    except InvalidModel:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise InvalidModel(f".fastlstm header is inconsistent: {e!r}") from None


def load(path, use_mmap=True):
    """Load a .fastlstm file (memory-mapped: pages are read as the kernels touch them)."""
    with open(path, "rb") as f:
        if use_mmap:
            try:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:          # empty file
                data = b""
        else:
            data = f.read()
    return loads(data)


def load_model(source, external_data_dir=None):
    """An ir.Graph, packed, from an ONNX or .fastlstm path, bytes, or onnx.ModelProto.

    ``external_data_dir``: where an ONNX model's external data lives (default:
    the model file's folder; a model given as bytes has none)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if is_packed(source):
            return loads(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                head = f.read(len(MAGIC))
            if head == MAGIC:
                return load(path)
    from .onnx_import import load_graph
    from .simplify import simplify
    return pack_graph(simplify(load_graph(source, external_data_dir)))
