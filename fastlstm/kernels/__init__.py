"""Numba kernels.

``activations``  vectorizable float32 exp/sigmoid/tanh and the ONNX activation list
``gemm``         the hoisted input projection: one blocked GEMM over all time steps
``lstm``/``gru``/``rnn``  one recurrent step each, recurrent GEMM fused with gate math
``registry``     the compiled ``cfunc`` entry points the Cython front end calls
"""
