"""Read an ONNX model (path or bytes) into an :class:`fastlstm.ir.Graph`."""
import os


from ..errors import FastLSTMError, InvalidModel, UnsupportedOp
from ..ir import ELEM_TYPES, Graph, Node, ValueInfo
from . import basic, recurrent  # noqa: F401  (register the builders)
from .registry import MAX_OPSET, MIN_OPSET, resolve


def _onnx():
    import onnx
    return onnx


def _value_info(vi, require_type=True):
    t = vi.type
    if not require_type and (not vi.HasField("type") or t.WhichOneof("value") is None):
        return ValueInfo(vi.name, 0, None)      # an output the model leaves untyped
    if not t.HasField("tensor_type"):
        raise UnsupportedOp(f"graph value '{vi.name}' is not a tensor "
                            f"(sequences, maps and optionals are not supported)")
    tt = t.tensor_type
    shape = None
    if tt.HasField("shape"):
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return ValueInfo(vi.name, int(tt.elem_type), shape)


class ImportContext:
    """What builders may ask of the graph being imported."""

    def __init__(self, initializers, input_types):
        self.initializers = initializers
        self.input_types = input_types

    def constant(self, name):
        """The constant array behind ``name``, or None if it is computed or fed."""
        return self.initializers.get(name) if name else None

    def add_constant(self, name, array):
        self.initializers[name] = array

    def require_inputs(self, node, lo, hi):
        n = len(node.inputs)
        while n and not node.inputs[n - 1]:
            n -= 1
        if n < lo or len(node.inputs) > hi:
            raise InvalidModel(f"{node.describe()} has {len(node.inputs)} inputs; "
                               f"{node.op_type} takes {lo} to {hi}")
        for i in range(lo):
            if not node.inputs[i]:
                raise InvalidModel(f"{node.describe()}: required input {i} is empty")

    def require_float(self, node, name, label):
        et = self.input_types.get(name)
        if et is not None and et != 1:
            shown = ELEM_TYPES.get(et, (None, f"elem_type {et}"))[1]
            raise UnsupportedOp(f"{node.describe()}: input {label} '{name}' is {shown}; "
                                f"fastlstm computes in float32 only (tensor(float))",
                                node.op_type, node.domain, node.since_version, node.name)


#: Prefix of the keys of a model's own metadata_props in ir.Graph.metadata.
CUSTOM_PREFIX = "custom:"


def _check_external(tensor, base_dir, what):
    """Refuse external data that a model could use to read files it should not.

    The location must be a relative path without ``..`` naming a regular file
    (not a symbolic link, device or FIFO) inside ``base_dir``, the model's
    folder.  A model given as bytes has no folder: ``base_dir`` is None and
    external data is refused.  (onnx's own reader makes the same checks when
    it opens the file; these come first so that the refusal does not depend
    on the onnx version.)
    """
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    if base_dir is None:
        raise InvalidModel(
            f"{what} '{tensor.name}' keeps its data in an external file ({location!r}), "
            f"and a model given as bytes has no folder to find it in: load the model from "
            f"its path, or set SessionOptions.external_data_dir to the folder of its data")
    parts = location.replace("\\", "/").split("/")
    if (not location or os.path.isabs(location) or location.startswith(("/", "\\"))
            or os.path.splitdrive(location)[0] or ".." in parts or "\0" in location):
        raise InvalidModel(f"{what} '{tensor.name}': external data location {location!r} "
                           f"must be a relative path inside the model's folder")
    base = os.path.realpath(base_dir)
    full = os.path.join(base_dir, location)
    real = os.path.realpath(full)
    if os.path.commonpath([base, real]) != base:
        raise InvalidModel(f"{what} '{tensor.name}': external data {location!r} points "
                           f"outside the model's folder {base_dir!r}")
    import stat
    try:
        st = os.lstat(full)
    except OSError as e:
        raise InvalidModel(f"{what} '{tensor.name}': external data file {location!r} not "
                           f"found in {base_dir!r}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise InvalidModel(f"{what} '{tensor.name}': external data {location!r} in "
                           f"{base_dir!r} is {kind}")


def _to_array(tensor, base_dir, what):
    """A TensorProto as a numpy array; external data resolved against ``base_dir``."""
    from onnx import external_data_helper, numpy_helper
    if external_data_helper.uses_external_data(tensor):
        _check_external(tensor, base_dir, what)
        return numpy_helper.to_array(tensor, base_dir)
    return numpy_helper.to_array(tensor)


def read_model(source):
    """Parse ``source`` (path, bytes or ModelProto).

    ``onnx.checker`` is not run: it refuses models that exporters write and
    onnxruntime runs (outputs without shapes, for one).  ``load_graph`` makes the
    structural checks that execution depends on instead.
    """
    onnx = _onnx()
    from google.protobuf.message import DecodeError
    if isinstance(source, onnx.ModelProto):
        model = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        try:
            model = onnx.load_model_from_string(bytes(source))
        except (DecodeError, ValueError, RuntimeError) as e:
            raise InvalidModel(f"the bytes given are not a valid ONNX model: {e}") from None
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise InvalidModel(f"model file '{path}' does not exist")
        try:
            with open(path, "rb") as f:
                model = onnx.load_model_from_string(f.read())
        except (DecodeError, ValueError, RuntimeError) as e:
            raise InvalidModel(f"'{path}' is not a valid ONNX model: {e}") from None
    else:
        raise TypeError(f"a model is a path, bytes or onnx.ModelProto, not "
                        f"{type(source).__name__}")
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InvalidModel("the model has no graph (empty, truncated or not an ONNX file)")
    return model


def _initializers(g, base_dir, where=""):
    """The initializers of GraphProto ``g`` as arrays (external data from ``base_dir``)."""
    out = {}
    for t in g.initializer:
        try:
            out[t.name] = _to_array(t, base_dir, "initializer")
        except FastLSTMError:
            raise
        except Exception as e:
            raise InvalidModel(f"{where}initializer '{t.name}' cannot be read: {e}") from None
    return out


def _import_subgraph(g, opset, base_dir, outer, where):
    """An attribute graph (If branch, Loop/Scan body) as an ir.Graph.

    ``outer``: the names visible from the enclosing scopes; the subgraph may
    read them (ONNX outer-scope references).  The graph's ``captures`` field
    lists those it reads, so the node that owns it can name them as inputs.
    """
    initializers = _initializers(g, base_dir, f"{where}: ")
    inputs = [_value_info(vi, require_type=False) for vi in g.input]
    outputs = [_value_info(vi, require_type=False) for vi in g.output]
    ctx = ImportContext(initializers, {vi.name: vi.elem_type for vi in inputs})
    local = set(initializers) | {vi.name for vi in inputs}
    available = set(outer) | local
    nodes = _import_nodes(g, opset, base_dir, ctx, available)
    defined = local | {o for n in nodes for o in n.outputs if o} | set(ctx.initializers)
    captures = []
    for n in nodes:
        for i in n.inputs:
            if i and i not in defined and i not in captures:
                captures.append(i)
    for vi in outputs:
        if vi.name not in available:
            raise InvalidModel(f"{where}: output '{vi.name}' is not produced by any node")
        if vi.name not in defined and vi.name not in captures:
            captures.append(vi.name)
    return Graph(inputs=inputs, outputs=outputs, nodes=nodes, initializers=ctx.initializers,
                 opsets={"": opset}, metadata={}, captures=tuple(captures))


def _import_nodes(g, opset, base_dir, ctx, available):
    """Import and validate the nodes of GraphProto ``g``; ``available`` (a set)
    grows with every value they define."""
    onnx = _onnx()
    nodes = []
    for k, pn in enumerate(g.node):
        name = pn.name or f"{pn.op_type}_{k}"
        since, builder = resolve(pn.op_type, pn.domain, opset, name)
        attrs = {}
        for at in pn.attribute:
            if at.ref_attr_name:
                raise InvalidModel(f'node "{name}": attribute references are only valid '
                                   f"inside functions")
            if at.type == onnx.AttributeProto.GRAPH:
                attrs[at.name] = _import_subgraph(at.g, opset, base_dir, available,
                                                  f'node "{name}" attribute {at.name}')
                continue
            if at.type == onnx.AttributeProto.GRAPHS:
                raise UnsupportedOp(f'node "{name}": attribute {at.name} holds a list of '
                                    f"graphs", pn.op_type, pn.domain, since, name)
            try:
                v = onnx.helper.get_attribute_value(at)
                if isinstance(v, onnx.TensorProto):
                    v = _to_array(v, base_dir, f'node "{name}": tensor attribute')
                elif isinstance(v, bytes):
                    v = v.decode("utf-8")
                elif isinstance(v, list) and v and isinstance(v[0], bytes):
                    v = [x.decode("utf-8") for x in v]
            except FastLSTMError:
                raise
            except Exception as e:      # undecodable text, malformed tensors, bad types
                raise InvalidModel(f'node "{name}": attribute \'{at.name}\' cannot be read: '
                                   f'{e}') from None
            attrs[at.name] = v
        node = Node(pn.op_type, name, tuple(pn.input), tuple(pn.output), attrs,
                    pn.domain or "", since)
        for i in node.inputs:
            if i and i not in available:
                raise InvalidModel(f"{node.describe()} reads '{i}', which no graph input, "
                                   f"initializer or earlier node provides (nodes must be in "
                                   f"topological order)")
        try:
            built = builder(node, ctx)
        except FastLSTMError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            # an attribute of the wrong type or shape, say
            raise InvalidModel(f"{node.describe()} is malformed: {e}") from None
        if built is not None:
            nodes.append(built)
        for o in pn.output:
            if o:
                if o in available:
                    raise InvalidModel(f"{node.describe()} writes '{o}', which is already "
                                       f"defined (SSA form requires one producer)")
                available.add(o)
    return nodes


def load_graph(source, external_data_dir=None):
    """Import an ONNX model into an ir.Graph, validating every node.

    Tensors stored as external data are read from the model file's folder,
    or from ``external_data_dir`` when given (the only way for a model given
    as bytes or as a ModelProto: without it their external data is refused).

    Raises
    ------
    InvalidModel   malformed or inconsistent model
    UnsupportedOp  an op, domain, opset, attribute or dtype fastlstm does not run
    """
    model = read_model(source)
    base_dir = external_data_dir
    if base_dir is None and isinstance(source, (str, os.PathLike)):
        base_dir = os.path.dirname(os.path.abspath(os.fspath(source)))
    g = model.graph
    opsets = {(o.domain or ""): int(o.version) for o in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is None:
        raise InvalidModel("the model imports no default-domain ONNX opset")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedOp(f"the model imports ONNX opset {opset}; fastlstm supports "
                            f"opsets {MIN_OPSET} to {MAX_OPSET}", opset=opset)
    initializers = _initializers(g, base_dir)
    if g.sparse_initializer:
        raise UnsupportedOp("sparse initializers are not supported")
    inputs = [_value_info(vi) for vi in g.input if vi.name not in initializers]
    outputs = [_value_info(vi, require_type=False) for vi in g.output]
    ctx = ImportContext(initializers, {vi.name: vi.elem_type for vi in inputs})
    available = set(initializers) | {vi.name for vi in inputs}
    nodes = _import_nodes(g, opset, base_dir, ctx, available)
    for vi in outputs:
        if vi.name not in available:
            raise InvalidModel(f"graph output '{vi.name}' is not produced by any node")
    meta = {"producer_name": model.producer_name, "producer_version": model.producer_version,
            "opset": str(opset), "graph_name": g.name, "domain": model.domain,
            "description": model.doc_string, "graph_description": g.doc_string,
            "model_version": str(model.model_version)}
    # the model's own metadata_props, kept apart so that none can pass for the above
    meta.update({CUSTOM_PREFIX + p.key: p.value for p in model.metadata_props})
    return Graph(inputs=inputs, outputs=outputs, nodes=nodes, initializers=initializers,
                 opsets=opsets, metadata=meta)


__all__ = ["load_graph", "read_model"]
