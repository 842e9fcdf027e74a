"""fastlstm: run ONNX LSTM, GRU and RNN models on the CPU, fast.

    import fastlstm
    sess = fastlstm.InferenceSession("model.onnx")
    outputs = sess.run(None, {"X": x})
"""
from .errors import ExtensionNotBuilt, FastLSTMError, InvalidInput, InvalidModel, UnsupportedOp
from .onnx_import import supported_ops
from .serving import MicroBatcher, Stream
from .session import InferenceSession, NodeArg, SessionOptions

__version__ = "0.1.0"

__all__ = ["InferenceSession", "SessionOptions", "NodeArg", "Stream", "MicroBatcher",
           "FastLSTMError", "InvalidModel",
           "UnsupportedOp", "InvalidInput", "ExtensionNotBuilt", "supported_ops",
           "__version__"]
