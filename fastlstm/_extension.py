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


def _check_abi():
    """The front end and the kernels must agree on what they pass each other:
    the tile and panel sizes, and the integer parameter block, whose C struct
    (``_frontend.IntParams``) must have the fields, order and offsets of
    ``kernels.common.IP_RUN_DTYPE``.  A stale build says so here, not by
    computing garbage."""
    offsets, size = frontend.ip_layout()
    want = {name: _common.IP_RUN_DTYPE.fields[name][1] for name in _common.IP_RUN_DTYPE.names}
    found = (frontend.tile_size(), frontend.panel_width(), offsets, size)
    if found != (_config.TILE, _config.PANEL, want, _common.IP_RUN_DTYPE.itemsize):
        raise ExtensionNotBuilt(  # pragma: no cover
            "fastlstm._frontend was built for another kernel parameter layout (TILE="
            f"{found[0]}, PANEL={found[1]}, IntParams {offsets} in {size} bytes; the kernels "
            f"expect TILE={_config.TILE}, PANEL={_config.PANEL}, {want} in "
            f"{_common.IP_RUN_DTYPE.itemsize} bytes): rebuild it with 'pip install -e .'")


_check_abi()
