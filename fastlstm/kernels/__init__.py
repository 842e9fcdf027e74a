"""Numba kernels.

``activations``  vectorizable float32 exp/sigmoid/tanh and the ONNX activation list
``simd``         register tiles written in LLVM IR (4 rows x 64 columns of FMAs)
``gemm``         products against packed weight panels, built on those tiles
``common``       the step kernels' C signature and parameter slots
``lstm``/``gru``/``rnn``  one recurrent step each: recurrent product, then gate math
``registry``     the compiled ``cfunc`` entry points the Cython front end calls
"""
