"""ONNX import: read a model into :mod:`fastlstm.ir`, validating every node.

``reader``     bytes/path -> onnx.ModelProto -> ir.Graph
``registry``   op builders by (domain, op_type) and opset version
``recurrent``  LSTM / GRU / RNN attribute validation
``basic``      Constant, and the ops of ``fastlstm.ops.table``
"""
from .reader import load_graph
from .registry import supported_ops

__all__ = ["load_graph", "supported_ops"]
