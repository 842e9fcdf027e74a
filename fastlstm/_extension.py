"""Imports the compiled front end, with a clear message when it is missing."""
from .errors import ExtensionNotBuilt

try:
    from . import _frontend as frontend
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ExtensionNotBuilt(
        "fastlstm's compiled extension (fastlstm._frontend) is not built. Install the "
        "package with 'pip install .' (or 'pip install -e .' in a checkout), which needs "
        f"a C compiler, Cython and numpy. Cause: {e}") from e

from . import config as _config  # noqa: E402
from .kernels import common as _common  # noqa: E402

if frontend.tile_size() != _config.TILE or frontend.ip_len() != _common.IP_LEN:  # pragma: no cover
    raise ExtensionNotBuilt("fastlstm._frontend was built for another kernel parameter layout "
                            f"(TILE={frontend.tile_size()}, IP_LEN={frontend.ip_len()}); "
                            "rebuild it with 'pip install -e .'")
