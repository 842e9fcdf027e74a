"""Imports the compiled front end, with a clear message when it is missing."""
from .errors import ExtensionNotBuilt

try:
    from . import _frontend as frontend
except ImportError as e:  # pragma: no cover - only on a broken install
    import os as _os
    _pkg = _os.path.dirname(_os.path.abspath(__file__))
    _shadow = ""
    if _os.path.isfile(_os.path.join(_os.path.dirname(_pkg), "setup.py")):
        # A source checkout: after 'pip install .', 'python -m fastlstm' run
        # from the checkout imports this folder (the current directory comes
        # first on sys.path), not the installed copy.
        _shadow = (f" Python imported fastlstm from the source folder {_pkg}, which has no "
                   "built extension: in a checkout install with 'pip install -e .' (it "
                   "builds the extension in place), or run from another directory or "
                   "through the 'fastlstm' command.")
    raise ExtensionNotBuilt(
        "fastlstm's compiled extension (fastlstm._frontend) is not built." + _shadow +
        " Installing needs a C compiler, Cython and numpy ('pip install .' or "
        f"'pip install -e .' in a checkout). Cause: {e}") from e

from . import config as _config  # noqa: E402
from .kernels import common as _common  # noqa: E402

if (frontend.tile_size(), frontend.panel_width(), frontend.ip_len()) != (
        _config.TILE, _config.PANEL, _common.IP_LEN):  # pragma: no cover
    raise ExtensionNotBuilt("fastlstm._frontend was built for another kernel parameter layout "
                            f"(TILE={frontend.tile_size()}, PANEL={frontend.panel_width()}, "
                            f"IP_LEN={frontend.ip_len()}); rebuild it with 'pip install -e .'")
