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
SHA-256, the graph (inputs, outputs, nodes with their validated attributes,
packed layers) and metadata; arrays appear in it as
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
from .ir import RECURRENT_GATES, Graph, Node, RecurrentSpec, ValueInfo
from .pack import PackedDirection, PackedLayer, pack_graph

MAGIC = b"FASTLSTM"
FORMAT_VERSION = 1
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


def _encode(value, w):
    """JSON-able form of an attribute value; arrays go to the payload."""
    if isinstance(value, np.ndarray):
        return w.add(value)
    if isinstance(value, PackedLayer):
        return {"packed_layer": {
            "W": w.add(value.W), "bias": w.add(value.bias), "hidden": value.hidden,
            "input_size": value.input_size,
            "dirs": [{k: w.add(getattr(d, k)) for k in ("R", "rb", "P", "ip", "fp")}
                     for d in value.dirs]}}
    if isinstance(value, RecurrentSpec):
        return {"recurrent_spec": asdict(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, w) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise InvalidModel(f"cannot store an attribute of type {type(value).__name__}")


def _decode(value, arrays):
    if isinstance(value, dict):
        if "array" in value:
            return arrays[value["array"]]
        if "packed_layer" in value:
            p = value["packed_layer"]
            return PackedLayer(W=arrays[p["W"]["array"]], bias=arrays[p["bias"]["array"]],
                               dirs=[PackedDirection(**{k: arrays[v["array"]]
                                                        for k, v in d.items()})
                                     for d in p["dirs"]],
                               hidden=p["hidden"], input_size=p["input_size"])
        if "recurrent_spec" in value:
            s = dict(value["recurrent_spec"])
            s["acts"] = [[tuple(t) for t in d] for d in s["acts"]]
            return RecurrentSpec(**s)
        raise InvalidModel(f"unknown attribute encoding {sorted(value)}")
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def _vi(v):
    return {"name": v.name, "elem_type": v.elem_type,
            "shape": None if v.shape is None else list(v.shape)}


def dumps(graph):
    """Serialize a packed ir.Graph to bytes."""
    from . import __version__
    from .simplify import simplify
    graph = pack_graph(simplify(graph))
    w = _Writer()
    nodes = [{"op_type": n.op_type, "name": n.name, "inputs": list(n.inputs),
              "outputs": list(n.outputs), "domain": n.domain,
              "since_version": n.since_version,
              "attrs": {k: _encode(v, w) for k, v in n.attrs.items()}} for n in graph.nodes]
    inits = {k: w.add(v) for k, v in graph.initializers.items()}
    payload = w.payload()
    header = {
        "format_version": FORMAT_VERSION, "fastlstm_version": __version__,
        "tile": config.TILE, "panel": 64,
        "payload_size": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "arrays": w.table,
        "graph": {"inputs": [_vi(v) for v in graph.inputs],
                  "outputs": [_vi(v) for v in graph.outputs],
                  "nodes": nodes, "initializers": inits, "opsets": graph.opsets},
        "metadata": graph.metadata,
    }
    hb = json.dumps(header, separators=(",", ":")).encode()
    head = MAGIC + struct.pack("<II", FORMAT_VERSION, len(hb)) + hashlib.sha256(hb).digest() + hb
    pad = -len(head) % _ALIGN
    return head + b"\0" * pad + payload


def save(graph, path):
    """Write a packed ir.Graph to ``path`` (written to a temporary name, then renamed)."""
    data = dumps(graph)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
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
    layer, spec = node.attrs["packed"], node.attrs.get("spec")
    if not isinstance(layer, PackedLayer) or not isinstance(spec, RecurrentSpec):
        raise InvalidModel(f"{node.describe()}: packed layer without its spec")
    H, I, D = layer.hidden, layer.input_size, spec.num_directions
    G = RECURRENT_GATES.get(spec.op)
    if G is None or not isinstance(H, int) or not isinstance(I, int) or H < 1 or I < 0:
        raise InvalidModel(f"{node.describe()}: bad packed layer sizes")
    Hp = padded(H)
    want = {"W": I * D * G * Hp, "bias": D * G * Hp}
    ok = (layer.W.size == want["W"] and layer.bias.size == want["bias"]
          and layer.W.dtype == np.float32 and layer.bias.dtype == np.float32
          and len(layer.dirs) == D)
    for d in layer.dirs:
        ok = ok and d.R.dtype == np.float32 and d.R.size == H * G * Hp
        ok = ok and d.rb.dtype == np.float32 and d.rb.size == Hp
        ok = ok and d.P.dtype == np.float32 and d.P.size == (3 * Hp if G == 4 else 1)
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


def loads(data):
    """Build an ir.Graph from .fastlstm bytes (or a memory map)."""
    header, start = read_header(data)
    try:
        size = header["payload_size"]
        if len(data) - start != size:
            raise InvalidModel(f".fastlstm file is truncated or padded: payload has "
                               f"{len(data) - start} bytes, the header says {size}")
        payload = memoryview(data)[start:start + size]
        if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise InvalidModel(".fastlstm payload checksum mismatch: the file is corrupt")
        if header.get("tile") != config.TILE or header.get("panel") != 64:
            raise InvalidModel(f".fastlstm file was packed for tile {header.get('tile')}, "
                               f"panel {header.get('panel')}; convert the model again")
        arrays = []
        for t in header["arrays"]:
            if t["dtype"] not in _DTYPES:
                raise InvalidModel(f"array of unknown dtype {t['dtype']!r}")
            dt = np.dtype(t["dtype"])
            count = int(np.prod(t["shape"], dtype=np.int64))
            if t["offset"] < 0 or t["offset"] + count * dt.itemsize > size:
                raise InvalidModel("array table points outside the payload")
            a = np.frombuffer(payload, dtype=dt, count=count, offset=t["offset"])
            arrays.append(a.reshape(t["shape"]))
        g = header["graph"]

        def vi(v):
            return ValueInfo(v["name"], v["elem_type"],
                             None if v["shape"] is None else tuple(v["shape"]))
        nodes = [Node(op_type=n["op_type"], name=n["name"], inputs=tuple(n["inputs"]),
                      outputs=tuple(n["outputs"]),
                      attrs={k: _decode(v, arrays) for k, v in n["attrs"].items()},
                      domain=n["domain"], since_version=n["since_version"])
                 for n in g["nodes"]]
        for n in nodes:
            if "packed" in n.attrs:
                _check_layer(n)
        return Graph(inputs=[vi(v) for v in g["inputs"]], outputs=[vi(v) for v in g["outputs"]],
                     nodes=nodes,
                     initializers={k: arrays[v["array"]] for k, v in g["initializers"].items()},
                     opsets=g["opsets"], metadata=dict(header.get("metadata", {})))
    except InvalidModel:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
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
