"""The one exception family that fastlstm raises.

Every error the library raises on purpose derives from :class:`FastLSTMError`, so
``except fastlstm.FastLSTMError`` catches all of them.  The concrete classes also
derive from the built-in exception a Python user would expect (``ValueError`` for
bad data, ``NotImplementedError`` for unsupported features).
"""


class FastLSTMError(Exception):
    """Base class of every error raised by fastlstm."""


class InvalidModel(FastLSTMError, ValueError):
    """The model file or graph is malformed, truncated or inconsistent."""


class UnsupportedOp(FastLSTMError, NotImplementedError):
    """An operator, attribute value or data type that fastlstm does not run.

    Attributes
    ----------
    op_type, domain, opset, node_name : str / int
        What was refused and where, so the message can point at the node.
    """

    def __init__(self, message, op_type=None, domain="", opset=None, node_name=None):
        super().__init__(message)
        self.op_type = op_type
        self.domain = domain
        self.opset = opset
        self.node_name = node_name


class InvalidInput(FastLSTMError, ValueError):
    """An input fed to ``run`` has the wrong name, dtype, rank, shape or value."""


class ExtensionNotBuilt(FastLSTMError, ImportError):
    """The compiled Cython front end could not be imported."""
