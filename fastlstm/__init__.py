"""fastlstm: run ONNX LSTM, GRU and RNN models on the CPU, fast.

    import fastlstm
    sess = fastlstm.InferenceSession("model.onnx")
    outputs = sess.run(None, {"X": x})
"""
from .errors import ExtensionNotBuilt, FastLSTMError, InvalidInput, InvalidModel, UnsupportedOp
from .onnx_import import supported_ops
from .pool import StreamPool
from .serving import MicroBatcher, Stream
from .session import InferenceSession, ModelMetadata, NodeArg, SessionOptions
from .lowp_report import lowp_error

__version__ = "0.1.0"


def example_model(name="lstm"):
    """Path of a model bundled with fastlstm.

    ``"lstm"``: a bidirectional LSTM, X [seq, batch, 64], initial_h and
    initial_c [2, batch, 128] (``fastlstm demo`` runs it).
    ``"lstm_forward"``: the same one direction, [1, batch, 128] states; a
    stream needs forward layers.  (``tools/make_example_model.py`` makes both.)
    """
    import os
    files = {"lstm": "example_lstm.onnx", "lstm_forward": "example_lstm_forward.onnx"}
    if name not in files:
        raise InvalidInput(f"no bundled model {name!r}; there are {sorted(files)}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", files[name])


__all__ = ["InferenceSession", "SessionOptions", "NodeArg", "Stream", "MicroBatcher",
           "StreamPool",
           "FastLSTMError", "InvalidModel",
           "UnsupportedOp", "InvalidInput", "ExtensionNotBuilt", "supported_ops", "lowp_error",
           "example_model", "ModelMetadata",
           "__version__"]
