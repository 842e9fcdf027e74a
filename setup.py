"""Builds the compiled extensions, fastlstm._frontend (the recurrent layers' front end)
and fastlstm._poolcore (StreamPool's per-chunk hot path); metadata is in pyproject.toml."""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FASTLSTM_DEBUG_BUILD", "") not in ("", "0")
directives = {"boundscheck": debug, "wraparound": debug, "initializedcheck": debug}

ext = Extension(
    "fastlstm._frontend",
    ["fastlstm/_frontend.pyx"],
    include_dirs=[np.get_include(), "fastlstm"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O3", "-pthread"] if os.name != "nt" else [],
    extra_link_args=["-pthread"] if os.name != "nt" else [],
    depends=["fastlstm/_team.h"],
)

pool = Extension(
    "fastlstm._poolcore",
    ["fastlstm/_poolcore.pyx"],
    include_dirs=[np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O2"] if os.name != "nt" else [],
)

setup(ext_modules=cythonize([ext, pool], compiler_directives=directives,
                            language_level=3))
