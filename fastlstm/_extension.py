"""Imports the compiled front end, with a clear message when it is missing."""
from .errors import ExtensionNotBuilt

try:
    from . import _frontend as frontend
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ExtensionNotBuilt(
        "fastlstm's compiled extension (fastlstm._frontend) is not built. Install the "
        "package with 'pip install .' (or 'pip install -e .' in a checkout), which needs "
        f"a C compiler, Cython and numpy. Cause: {e}") from e

from . import config as _config

if frontend.tile_size() != _config.TILE:  # pragma: no cover
    raise ExtensionNotBuilt(f"fastlstm._frontend was built for TILE={frontend.tile_size()} "
                            f"but fastlstm.config.TILE={_config.TILE}; rebuild it")
