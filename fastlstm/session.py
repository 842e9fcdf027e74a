"""The onnxruntime-shaped API: InferenceSession, SessionOptions, NodeArg.

    import fastlstm
    sess = fastlstm.InferenceSession("model.onnx")
    y, = sess.run(["Y"], {"X": x})

Switching from onnxruntime is one line: the constructor takes the same model
path or bytes, ``run`` the same arguments and gives the same results.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from . import config, limits
from .errors import FastLSTMError, InvalidInput
from .fileformat import load_model
from .plan import Plan


class SessionOptions:
    """Options of a session, with onnxruntime's names.

    Attributes
    ----------
    intra_op_num_threads : int
        Threads a single run may use; 0 means the default (the environment
        variable FASTLSTM_NUM_THREADS, else 1).
    external_data_dir : str or None
        The folder of an ONNX model's external data files.  By default they
        are looked for beside the model file; a model given as bytes has no
        folder, so its external data is refused unless this is set (also
        settable as onnxruntime's session config entry
        ``session.model_external_initializers_file_folder_path``).
    max_tensor_bytes : int
        The largest array a model may make fastlstm allocate from what it
        says (a constant folded at load, a buffer an op plans from input
        values, a stream's state); default 1 GiB.  See ``fastlstm.limits``.
    weights : str
        "float32" (default), "bf16" or "int8": the precision of the recurrent
        layers' weights (opt-in; see ``fastlstm.pack_lowp``).  The mode is
        in ``get_modelmeta().custom_metadata_map["fastlstm.weights"]``, and
        ``fastlstm.lowp_error`` measures what it changes.
    """

    #: onnxruntime's config key for the folder of external initializers.
    EXTERNAL_DATA_KEY = "session.model_external_initializers_file_folder_path"

    def __init__(self):
        self.intra_op_num_threads = 0
        self.external_data_dir = None
        self.max_tensor_bytes = limits.DEFAULT_MAX_TENSOR_BYTES
        self.weights = "float32"
        self._config = {}

    def add_session_config_entry(self, key, value):
        """Set a session config entry (onnxruntime's API); fastlstm reads
        ``session.model_external_initializers_file_folder_path`` and keeps
        the others so that ``get_session_config_entry`` returns them."""
        key, value = str(key), str(value)
        self._config[key] = value
        if key == self.EXTERNAL_DATA_KEY:
            self.external_data_dir = value

    def get_session_config_entry(self, key):
        """The value set by ``add_session_config_entry`` (onnxruntime's API)."""
        if key == self.EXTERNAL_DATA_KEY and self.external_data_dir is not None:
            return str(self.external_data_dir)
        if key not in self._config:
            raise InvalidInput(f"session config entry {key!r} is not set")
        return self._config[key]


@dataclass(frozen=True)
class ModelMetadata:
    """What ``get_modelmeta()`` returns, with onnxruntime's ModelMetadata fields."""
    producer_name: str = ""
    graph_name: str = ""
    domain: str = ""
    description: str = ""
    graph_description: str = ""
    version: int = 0
    custom_metadata_map: Dict[str, str] = field(default_factory=dict)


#: Key prefix of a model's own metadata_props in ir.Graph.metadata
#: (onnx_import.reader.CUSTOM_PREFIX; not imported: a .fastlstm loads without onnx).
_CUSTOM = "custom:"
_PROVIDER = "CPUExecutionProvider"


def _option(options, name, default):
    """An option from fastlstm's SessionOptions, or from onnxruntime's (which code
    switching only the session class still passes)."""
    value = getattr(options, name, None)
    if value is not None:
        return value
    if name == "external_data_dir" and hasattr(options, "get_session_config_entry"):
        try:
            return options.get_session_config_entry(SessionOptions.EXTERNAL_DATA_KEY)
        except Exception:       # onnxruntime raises RuntimeError for a missing key
            return default
    return default


@dataclass(frozen=True)
class NodeArg:
    """Name, shape and type of a model input or output (as onnxruntime.NodeArg)."""
    name: str
    shape: Optional[List[Union[int, str, None]]]
    type: str


class InferenceSession:
    """Load a model once, run it many times.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike or bytes
        An ONNX model file, or its serialized bytes.
    sess_options : SessionOptions, optional
        fastlstm's, or onnxruntime's (its intra_op_num_threads and external
        data folder config entry are read; the rest is ignored).
    providers, provider_options : ignored
        Accepted so that code written for onnxruntime runs unchanged; fastlstm
        has one provider, which it reports as onnxruntime's CPUExecutionProvider.
    **kwargs : ignored, as onnxruntime ignores them
        A ``SessionOptions`` field given here (``intra_op_num_threads=2``)
        does not take effect: a ``UserWarning`` says so.

    Raises
    ------
    InvalidModel, UnsupportedOp
        When the model cannot be read or uses what fastlstm does not run.
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None,
                 provider_options=None, **kwargs):
        self._options = sess_options if sess_options is not None else SessionOptions()
        misplaced = sorted(k for k in kwargs if k in vars(SessionOptions()))
        if misplaced:
            import warnings
            warnings.warn(f"InferenceSession ignores {', '.join(misplaced)} given as keyword "
                          f"arguments (as onnxruntime does): set them on a SessionOptions "
                          f"passed as sess_options", UserWarning, stacklevel=2)
        n = _option(self._options, "intra_op_num_threads", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise FastLSTMError(f"intra_op_num_threads must be an int >= 0, got {n!r}")
        self.num_threads = n or config.default_num_threads()
        self._max_tensor_bytes = limits.validate_limit(
            _option(self._options, "max_tensor_bytes", limits.DEFAULT_MAX_TENSOR_BYTES))
        with limits.limit(self._max_tensor_bytes, loading=True):
            self._graph = load_model(path_or_bytes, external_data_dir=_option(
                self._options, "external_data_dir", None))
            weights = _option(self._options, "weights", "float32")
            if weights != "float32":    # opt-in reduced precision (fastlstm.pack_lowp)
                from .pack_lowp import convert_graph
                self._graph, self.weights_kept = convert_graph(self._graph, weights)
            self._plan = Plan(self._graph, self.num_threads)

    def get_inputs(self):
        """The inputs a run must feed (initializers excluded), as NodeArg."""
        return [NodeArg(v.name, None if v.shape is None else list(v.shape), v.type_str)
                for v in self._graph.inputs]

    def get_outputs(self):
        """The model's outputs, as NodeArg."""
        return [NodeArg(v.name, None if v.shape is None else list(v.shape), v.type_str)
                for v in self._graph.outputs]

    def get_modelmeta(self):
        """The model's metadata as onnxruntime gives it: ``.producer_name``,
        ``.graph_name``, ``.domain``, ``.description``, ``.graph_description``,
        ``.version`` and ``.custom_metadata_map`` (the model's metadata_props)."""
        m = self._graph.metadata
        try:
            version = int(m.get("model_version", "0") or 0)
        except ValueError:
            version = 0
        return ModelMetadata(
            producer_name=m.get("producer_name", ""), graph_name=m.get("graph_name", ""),
            domain=m.get("domain", ""), description=m.get("description", ""),
            graph_description=m.get("graph_description", ""), version=version,
            custom_metadata_map={k[len(_CUSTOM):]: v for k, v in m.items()
                                 if k.startswith(_CUSTOM)})

    def get_session_options(self):
        """The SessionOptions the session was made with (onnxruntime's API)."""
        return self._options

    def get_providers(self):
        """``["CPUExecutionProvider"]``: fastlstm's one provider, by onnxruntime's name."""
        return [_PROVIDER]

    def get_provider_options(self):
        """``{"CPUExecutionProvider": {}}`` (onnxruntime's API; fastlstm takes no
        provider options)."""
        return {_PROVIDER: {}}

    def set_providers(self, providers=None, provider_options=None):
        """Accepted and ignored, as the constructor's ``providers`` (onnxruntime's API)."""

    def get_overridable_initializers(self):
        """``[]``: initializers are constants (onnxruntime's API)."""
        return []

    def stream(self, batch_size=1):
        """A :class:`fastlstm.serving.Stream`: runs that continue each other's state."""
        from .serving import Stream
        return Stream(self, batch_size)

    def run_sequences(self, sequences, output_names=None):
        """Run sequences of different lengths ([T_i, input_size] each) as one batch.

        They are packed (longest first; rows leave the batch as their sequence
        ends and padding is never computed) and each gets back a dict of its own
        outputs, exactly as if it had run alone.  For models whose input feeds
        a recurrent node and whose outputs come from recurrent nodes.
        """
        from .serving import SequenceBatcher
        batcher = self.__dict__.get("_seq_batcher")
        if batcher is None:
            batcher = self._seq_batcher = SequenceBatcher(self)
        return batcher.run(sequences, output_names)

    def run(self, output_names, input_feed, run_options=None):
        """Compute ``output_names`` (None: all outputs) from ``input_feed``.

        Returns a list of numpy arrays, in the order of ``output_names``.

        Raises
        ------
        InvalidInput
            Unknown or missing input, wrong dtype, rank or size, dims that
            contradict each other or the model, values out of range.
        """
        if self._max_tensor_bytes != limits.DEFAULT_MAX_TENSOR_BYTES:
            with limits.limit(self._max_tensor_bytes):      # (the default costs nothing)
                return self._plan.run(output_names, input_feed)
        return self._plan.run(output_names, input_feed)

    # Read-only views for fastlstm's own tools (serving, the command line,
    # benchmarks): what they may know of a session beyond onnxruntime's API.

    def recurrent_layers(self):
        """The model's LSTM, GRU and RNN nodes after planning, in execution order.

        Each is an ``ir.Node`` copy whose ``layer`` (``ir.RecurrentLayer``:
        validated spec, packed weights or None, Y layout) is the session's own,
        frozen; changing a copy changes nothing in the session.
        """
        return tuple(node for node, _ in self.plan_runners() if node.layer is not None)

    def plan_runners(self):
        """(node, runner) for every node of the plan, in execution order.

        ``node`` is an ``ir.Node`` copy; ``runner(values)`` computes the node's
        outputs (a list, by output position) from ``values``, a dict holding at
        least its inputs (see ``trace``): benchmarks time single nodes this way.
        """
        from dataclasses import replace
        return tuple((replace(r.node, attrs=dict(r.node.attrs)), r) for r in self._plan.runners)

    def state_inputs(self):
        """Names of the inputs that only feed recurrent nodes' initial_h/initial_c
        (a stream carries those instead)."""
        return self._plan.state_inputs()

    def trace(self, input_feed):
        """Every value of one run, name -> array: the fed inputs, the constants and
        each node's outputs (every node runs).  For tools that time or inspect
        single nodes (``plan_runners``)."""
        values = dict(self._plan.constants)
        values.update(self._plan.check_inputs(input_feed))
        for r in self._plan.runners:
            for name, v in zip(r.node.outputs, r(values)):
                if name:
                    values[name] = v
        return values

    def graph_info(self):
        """What ``fastlstm info`` reports of the planned graph: op counts, bytes
        of constants (other than packed weights), the model's metadata and opsets."""
        from collections import Counter
        g = self._graph
        return {"ops": dict(Counter(n.op_type for n in g.nodes)),
                "constant_bytes": int(sum(a.nbytes for a in g.initializers.values())),
                "metadata": dict(g.metadata), "opsets": dict(g.opsets)}

    def _run_with(self, output_names, input_feed, ctx, optional=frozenset(), run_all=False):
        """``run`` with a ``plan.RunContext`` (a stream's state, a packed batch's
        lengths): how ``fastlstm.serving`` runs a session.  ``optional`` inputs
        may be left out; ``run_all`` runs every node, needed or not."""
        if self._max_tensor_bytes != limits.DEFAULT_MAX_TENSOR_BYTES:
            with limits.limit(self._max_tensor_bytes):
                return self._plan.run(output_names, input_feed, ctx=ctx, optional=optional,
                                      run_all=run_all)
        return self._plan.run(output_names, input_feed, ctx=ctx, optional=optional,
                              run_all=run_all)
