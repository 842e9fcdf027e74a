"""Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool,
one node at a time, against onnxruntime (the ONNX reference evaluator where
onnxruntime refuses a case): 1-D and 2-D (and one 3-D), odd sizes, groups and
depthwise, dilations, strides, every auto_pad, ceil_mode, weights as
initializers and as graph inputs, in the ONNX versions that changed the op."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import fastlstm
from fastlstm import InvalidInput, InvalidModel, UnsupportedOp
from helpers import run_ort

R = np.random.default_rng(7)


def _rand(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _model(op, inputs, attrs, opset, n_out=1, consts=()):
    """inputs: list of (name, array or None for an absent input); names in
    consts become initializers."""
    names = [n if a is not None else "" for n, a in inputs]
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, name="the_node", **attrs)
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                          list(a.shape))
            for n, a in inputs if a is not None and n not in consts]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if a is not None and n in consts]
    g = helper.make_graph([node], "g", g_in, [onnx.ValueInfoProto(name=o) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _expected(op, inputs, attrs, opset, n_out):
    """onnxruntime's outputs, or the reference evaluator's where onnxruntime
    refuses the model (and which one answered)."""
    model = _model(op, inputs, attrs, opset, n_out)
    feed = {n: a for n, a in inputs if a is not None}
    try:
        return run_ort(model, feed), "ort"
    except Exception as e:  # noqa: BLE001 - any refusal by onnxruntime
        msg = str(e).lower()
        if "not_implemented" not in msg and "not implemented" not in msg and \
                "not supported" not in msg and "NotImplemented" not in type(e).__name__:
            raise
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, feed), "reference"


def _tol(inputs):
    """atol grows with the length of the sums (input channels x taps)."""
    w = dict(inputs).get("W")
    k = int(np.prod(w.shape[1:])) if w is not None else 1
    return 1e-5 * max(1.0, np.sqrt(k)), 1e-4


def _compare(op, inputs, attrs, opset, n_out=1, const_names=("W", "B")):
    exp, _ = _expected(op, inputs, attrs, opset, n_out)
    atol, rtol = _tol(inputs)
    feed_all = {n: a for n, a in inputs if a is not None}
    variants = [()]
    if any(n in feed_all for n in const_names):
        variants.append(tuple(n for n in const_names if n in feed_all))
    for consts in variants:
        model = _model(op, inputs, attrs, opset, n_out, consts)
        sess = fastlstm.InferenceSession(model.SerializeToString())
        feed = {n: a for n, a in feed_all.items() if n not in consts}
        for _ in range(2):      # the second call reuses the cached geometry
            got = sess.run(None, feed)
            assert len(got) == len(exp)
            for g, e in zip(got, exp):
                assert g.shape == e.shape, (g.shape, e.shape, consts)
                assert g.dtype == e.dtype
                np.testing.assert_allclose(g, e, atol=atol, rtol=rtol, err_msg=str(consts))
    return exp


# (x shape, W shape, bias, attrs)
CONV = [
    # Silero VAD (16 kHz and 8 kHz): STFT, encoder, decoder
    ((1, 1, 640), (258, 1, 256), True, {"strides": [128]}),
    ((1, 1, 320), (130, 1, 128), True, {"strides": [64]}),
    ((1, 129, 4), (128, 129, 3), True, {"pads": [1, 1]}),
    ((1, 65, 4), (128, 65, 3), True, {"pads": [1, 1]}),
    ((1, 128, 4), (64, 128, 3), True, {"pads": [1, 1], "strides": [2]}),
    ((1, 64, 2), (64, 64, 3), True, {"pads": [1, 1], "strides": [2]}),
    ((1, 64, 1), (128, 64, 3), True, {"pads": [1, 1]}),
    ((1, 128, 1), (1, 128, 1), True, {}),
    # 1-D: odd sizes, strides, dilations, uneven pads, batch, no bias
    ((2, 5, 13), (7, 5, 4), False, {"strides": [3], "pads": [2, 3], "dilations": [2]}),
    ((3, 3, 17), (37, 3, 5), True, {"pads": [0, 4], "dilations": [3]}),
    ((1, 6, 11), (18, 3, 3), True, {"group": 2, "strides": [2], "pads": [1, 0]}),
    ((2, 6, 10), (6, 1, 3), True, {"group": 6, "pads": [1, 1]}),             # depthwise
    ((1, 4, 9), (8, 1, 5), False, {"group": 4, "dilations": [2], "pads": [4, 4]}),
    ((1, 16, 9), (32, 4, 3), True, {"group": 4, "strides": [2]}),
    ((1, 3, 10), (20, 3, 3), True, {"auto_pad": "SAME_UPPER", "strides": [3]}),
    ((1, 3, 10), (20, 3, 4), True, {"auto_pad": "SAME_LOWER", "strides": [3]}),
    ((1, 3, 11), (20, 3, 4), True, {"auto_pad": "SAME_LOWER", "dilations": [2]}),
    ((1, 3, 10), (20, 3, 4), True, {"auto_pad": "VALID", "strides": [3]}),
    ((1, 3, 10), (20, 3, 4), True, {"auto_pad": "NOTSET", "kernel_shape": [4]}),
    ((1, 2, 3), (40, 2, 3), True, {"pads": [5, 5]}),       # rows of padding only
    # 2-D
    ((2, 6, 9, 11), (20, 3, 3, 2), True,
     {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}),
    ((1, 8, 7, 7), (8, 1, 3, 3), True, {"group": 8, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 4, 6, 5), (12, 1, 3, 3), False, {"group": 4, "strides": [2, 2]}),
    ((1, 16, 13, 15), (32, 16, 3, 3), True, {"pads": [1, 1, 1, 1]}),
    ((2, 8, 5, 7), (24, 8, 1, 1), False, {}),
    ((1, 3, 9, 10), (17, 3, 3, 4), True,
     {"auto_pad": "SAME_UPPER", "strides": [2, 3], "kernel_shape": [3, 4]}),
    ((1, 3, 9, 10), (17, 3, 4, 3), True, {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 3, 9, 10), (17, 3, 4, 3), True, {"auto_pad": "VALID", "strides": [2, 3]}),
    # 3-D
    ((1, 4, 5, 6, 7), (16, 2, 2, 3, 2), True,
     {"group": 2, "pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 2]}),
]


@pytest.mark.parametrize("opset", [11, 22])
@pytest.mark.parametrize("xs,ws,bias,attrs", CONV,
                         ids=[f"{c[0]}x{c[1]}-{k}" for k, c in enumerate(CONV)])
def test_conv(xs, ws, bias, attrs, opset):
    inputs = [("x", _rand(*xs)), ("W", _rand(*ws)), ("B", _rand(ws[0]) if bias else None)]
    _compare("Conv", inputs, attrs, opset)


def test_conv_opset7_and_no_bias_input():
    inputs = [("x", _rand(1, 3, 12)), ("W", _rand(5, 3, 3))]
    _compare("Conv", inputs, {"pads": [1, 2]}, 7)


# (x shape, W shape [CIN, COUT/group, k...], bias, attrs)
CONVT = [
    ((1, 4, 5), (4, 3, 3), True, {"strides": [2], "pads": [1, 1], "output_padding": [1]}),
    ((2, 3, 7), (3, 5, 4), False, {"dilations": [2], "pads": [0, 2]}),
    ((1, 4, 6), (4, 2, 3), True, {"group": 2, "strides": [3]}),
    ((1, 4, 6), (4, 1, 3), True, {"group": 4, "strides": [2], "pads": [1, 0]}),
    ((1, 3, 5), (3, 2, 3), True, {"strides": [2], "output_shape": [10]}),
    ((1, 3, 5), (3, 2, 3), True, {"strides": [2], "output_shape": [12]}),
    ((1, 3, 5), (3, 2, 4), True, {"strides": [2], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 5), (3, 2, 4), True, {"strides": [2], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 5), (3, 2, 4), True, {"strides": [2], "auto_pad": "VALID"}),
    ((2, 4, 5, 6), (4, 3, 3, 2), True,
     {"group": 2, "strides": [2, 3], "dilations": [2, 1], "pads": [1, 0, 0, 1],
      "output_padding": [1, 2]}),
    ((1, 2, 4, 3), (2, 3, 3, 3), False, {"strides": [2, 2], "output_shape": [8, 7]}),
    ((1, 2, 4, 3), (2, 3, 3, 3), True, {"strides": [2, 1], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 4, 3), (2, 3, 2, 3), True, {"strides": [2, 2], "auto_pad": "VALID",
                                        "kernel_shape": [2, 3]}),
]


@pytest.mark.parametrize("opset", [11, 22])
@pytest.mark.parametrize("xs,ws,bias,attrs", CONVT,
                         ids=[f"{c[0]}x{c[1]}-{k}" for k, c in enumerate(CONVT)])
def test_conv_transpose(xs, ws, bias, attrs, opset):
    g = attrs.get("group", 1)
    inputs = [("x", _rand(*xs)), ("W", _rand(*ws)),
              ("B", _rand(ws[1] * g) if bias else None)]
    _compare("ConvTranspose", inputs, attrs, opset)


# (x shape, attrs, opsets)
MAXPOOL = [
    ((1, 3, 11), {"kernel_shape": [3]}, [7, 8, 10, 12, 22]),
    ((2, 3, 11), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}, [7, 8, 12, 22]),
    ((1, 2, 10), {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}, [10, 22]),
    ((1, 2, 10), {"kernel_shape": [3], "strides": [3], "pads": [1, 1], "ceil_mode": 1},
     [10, 22]),
    ((1, 2, 12), {"kernel_shape": [3], "dilations": [2], "strides": [2]}, [10, 12, 22]),
    ((1, 2, 9), {"kernel_shape": [3], "strides": [2], "auto_pad": "SAME_UPPER"}, [8, 22]),
    ((1, 2, 9), {"kernel_shape": [4], "strides": [2], "auto_pad": "SAME_LOWER"}, [8, 22]),
    ((1, 2, 9), {"kernel_shape": [4], "strides": [2], "auto_pad": "VALID"}, [8, 22]),
    ((2, 3, 7, 9), {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 0, 1, 2]},
     [7, 12, 22]),
    ((1, 2, 8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, [10, 22]),
    ((1, 2, 9, 9), {"kernel_shape": [2, 2], "dilations": [2, 3]}, [11, 22]),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "auto_pad": "SAME_UPPER"},
     [8, 22]),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "auto_pad": "SAME_LOWER"},
     [8, 22]),
    ((1, 2, 4, 5, 6), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2]}, [12, 22]),
]


@pytest.mark.parametrize("xs,attrs,opsets", MAXPOOL,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(MAXPOOL)])
def test_max_pool(xs, attrs, opsets):
    for opset in opsets:
        _compare("MaxPool", [("x", _rand(*xs))], attrs, opset)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("xs,attrs", [
    ((2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((2, 3, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1]}),
    ((1, 2, 8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
])
def test_max_pool_indices(xs, attrs, storage_order):
    attrs = dict(attrs, storage_order=storage_order)
    _compare("MaxPool", [("x", _rand(*xs))], attrs, 12, n_out=2)


AVGPOOL = [
    ((1, 3, 11), {"kernel_shape": [3]}, [7, 10, 19, 22]),
    ((2, 3, 11), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}, [7, 11, 22]),
    ((2, 3, 11), {"kernel_shape": [4], "strides": [3], "pads": [1, 2],
                  "count_include_pad": 1}, [7, 11, 22]),
    ((1, 2, 10), {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}, [10, 22]),
    ((1, 2, 10), {"kernel_shape": [3], "strides": [3], "pads": [1, 1], "ceil_mode": 1,
                  "count_include_pad": 1}, [10, 22]),
    ((1, 2, 10), {"kernel_shape": [3], "strides": [2], "pads": [2, 2], "ceil_mode": 1},
     [10, 22]),
    ((1, 2, 12), {"kernel_shape": [3], "dilations": [2], "strides": [2]}, [19, 22]),
    ((1, 2, 12), {"kernel_shape": [3], "dilations": [2], "pads": [1, 2],
                  "count_include_pad": 1}, [19, 22]),
    ((1, 2, 9), {"kernel_shape": [3], "strides": [2], "auto_pad": "SAME_UPPER"}, [7, 22]),
    ((1, 2, 9), {"kernel_shape": [4], "strides": [2], "auto_pad": "SAME_LOWER"}, [7, 22]),
    ((1, 2, 9), {"kernel_shape": [4], "strides": [2], "auto_pad": "SAME_UPPER",
                 "count_include_pad": 1}, [7, 22]),
    ((1, 2, 9), {"kernel_shape": [4], "strides": [2], "auto_pad": "VALID"}, [7, 22]),
    ((2, 3, 7, 9), {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 0, 1, 2]},
     [7, 22]),
    ((2, 3, 7, 9), {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 0, 1, 2],
                    "count_include_pad": 1}, [7, 22]),
    ((1, 2, 8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, [10, 22]),
    ((1, 2, 9, 9), {"kernel_shape": [2, 2], "dilations": [2, 3]}, [19, 22]),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "auto_pad": "SAME_LOWER"},
     [7, 22]),
    ((1, 2, 4, 5, 6), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2]}, [11, 22]),
]


@pytest.mark.parametrize("xs,attrs,opsets", AVGPOOL,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(AVGPOOL)])
def test_average_pool(xs, attrs, opsets):
    for opset in opsets:
        _compare("AveragePool", [("x", _rand(*xs))], attrs, opset)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("xs", [(1, 3, 7), (2, 4, 5, 6), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("opset", [7, 22])
def test_global_pools(op, xs, opset):
    _compare(op, [("x", _rand(*xs))], {}, opset)


# ---- constant folding, fusion, fed weights that change ------------------------------

def test_conv_with_constant_input_is_folded():
    x, w, b = _rand(1, 3, 9), _rand(4, 3, 3), _rand(4)
    inputs = [("x", x), ("W", w), ("B", b)]
    exp, _ = _expected("Conv", inputs, {"pads": [1, 1]}, 17, 1)
    model = _model("Conv", inputs, {"pads": [1, 1]}, 17, consts=("x", "W", "B"))
    sess = fastlstm.InferenceSession(model.SerializeToString())
    assert not sess._graph.nodes
    np.testing.assert_allclose(sess.run(None, {})[0], exp[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("op,ws", [("Conv", (258, 1, 256)), ("Conv", (1, 128, 1)),
                                   ("Conv", (6, 1, 3)), ("ConvTranspose", (128, 4, 3))])
def test_fused_relu(op, ws):
    cin = ws[0] if op == "ConvTranspose" else ws[1] * (6 if ws == (6, 1, 3) else 1)
    x = _rand(1, cin, 640 if ws[0] == 258 else 5)
    attrs = {"strides": [128]} if ws[0] == 258 else {"group": 6} if ws == (6, 1, 3) else {}
    cout = ws[1] if op == "ConvTranspose" else ws[0]
    inputs = [("x", x), ("W", _rand(*ws)), ("B", _rand(cout))]
    exp, _ = _expected(op, inputs, attrs, 17, 1)
    model = _model(op, inputs, attrs, 17, consts=("W", "B"))
    sess = fastlstm.InferenceSession(model.SerializeToString())
    (runner,) = sess._plan.runners
    plain = sess.run(None, {"x": x})[0]
    assert runner.fuse_activation("Tanh") is False
    assert runner.fuse_activation("Relu") is True and runner.fuse_relu
    assert runner.fuse_activation("Sigmoid") is False       # one already fused
    assert runner.fused_activation == "Relu"
    fused = sess.run(None, {"x": x})[0]
    atol = 1e-5 * np.sqrt(np.prod(ws[1:]) * (ws[0] if op == "ConvTranspose" else 1))
    np.testing.assert_allclose(plain, exp[0], atol=atol, rtol=1e-4)
    np.testing.assert_allclose(fused, np.maximum(exp[0], 0), atol=atol, rtol=1e-4)
    assert (fused >= 0).all() and (fused == 0).any()
    runner.fuse_relu = False
    # (the session's specialised run, built on the second run, keeps the
    # kernel call it was built with: the runner alone sees the change)
    np.testing.assert_array_equal(runner.run1(x), plain)
    sig = runner.fused("Sigmoid")       # a copy; the runner itself is unchanged
    assert sig.fused_activation == "Sigmoid" and runner.fused_activation is None
    assert sig.fused("Relu") is None and runner.fused("Tanh") is None
    np.testing.assert_array_equal(runner.run1(x), plain)
    sig_out = sig.run1(x)
    assert runner.fuse_activation("Sigmoid") and runner.fused_activation == "Sigmoid"
    # the same as the model's own Sigmoid node after the Conv (the decoder of Silero)
    conv_sig = _model(op, inputs, attrs, 17, consts=("W", "B"))
    conv_sig.graph.output[0].name = "c"
    conv_sig.graph.node[0].output[0] = "c"
    conv_sig.graph.node.append(helper.make_node("Sigmoid", ["c"], ["y0"]))
    conv_sig.graph.output.append(onnx.ValueInfoProto(name="y0"))
    both = run_ort(conv_sig, {"x": x})
    ours = fastlstm.InferenceSession(conv_sig.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(runner.run1(x), both[1], atol=1e-6, rtol=1e-5)
    # (the fused Sigmoid is the kernels' float32 form, within 1.9e-7 of the exact one)
    np.testing.assert_allclose(runner.run1(x), ours[1], atol=4e-7, rtol=0)
    np.testing.assert_array_equal(sig_out, runner.run1(x))


def test_fed_weights_and_inputs_change_between_calls():
    model = _model("Conv", [("x", _rand(1, 4, 9)), ("W", _rand(6, 2, 3)), ("B", _rand(6))],
                   {"group": 2, "pads": [1, 1]}, 17)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "T"
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "M"
    model.graph.input[2].type.tensor_type.shape.dim[0].dim_param = "M"
    sess = fastlstm.InferenceSession(model.SerializeToString())
    for T, M in [(9, 6), (4, 6), (9, 20), (1, 20), (9, 6)]:
        feed = {"x": _rand(1, 4, T), "W": _rand(M, 2, 3), "B": _rand(M)}
        np.testing.assert_allclose(sess.run(None, feed)[0], run_ort(model, feed)[0],
                                   atol=1e-5, rtol=1e-4)


def test_non_contiguous_input():
    inputs = [("x", _rand(1, 3, 12)), ("W", _rand(5, 3, 3)), ("B", _rand(5))]
    model = _model("Conv", inputs, {}, 17, consts=("W", "B"))
    sess = fastlstm.InferenceSession(model.SerializeToString())
    big = _rand(1, 3, 24)
    x = big[:, :, ::2]
    exp = run_ort(model, {"x": np.ascontiguousarray(x)})[0]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], exp, atol=1e-5, rtol=1e-4)


# ---- errors name the node ---------------------------------------------------------------

def _sess(op, inputs, attrs, opset=17, consts=("W", "B"), n_out=1):
    model = _model(op, inputs, attrs, opset, n_out, consts)
    return fastlstm.InferenceSession(model.SerializeToString())


def test_conv_bad_inputs_name_the_node():
    w, b = _rand(4, 3, 3), _rand(4)
    sess = _sess("Conv", [("x", _rand(1, 3, 8)), ("W", w), ("B", b)], {})
    sess._plan.input_infos.clear()      # let the runner see what the model would refuse
    sess._plan._checked.clear()
    for bad, match in [(_rand(1, 5, 8), "channels"), (_rand(1, 3, 8, 2), "rank"),
                       (_rand(1, 3, 2), "smaller than the kernel"),
                       (np.zeros((1, 3, 8), np.float64), "float32")]:
        with pytest.raises(InvalidInput, match="the_node"):
            try:
                sess._plan.runners[0]({"x": bad})
            except InvalidInput as e:
                assert match in str(e), str(e)
                raise
    # fed weights of the wrong shape or dtype
    sess = _sess("Conv", [("x", _rand(1, 3, 8)), ("W", w), ("B", b)], {}, consts=())
    runner = sess._plan.runners[0]
    for W, B, match in [(_rand(4, 2, 3), b, "channels"), (w, _rand(5), "input B"),
                        (w.astype(np.float64), b, "float32"), (_rand(4, 3), b, "rank"),
                        (_rand(3, 1, 3), _rand(3), "channels")]:
        with pytest.raises(InvalidInput, match="the_node") as ei:
            runner({"x": _rand(1, 3, 8), "W": W, "B": B})
        assert match in str(ei.value), str(ei.value)


def test_conv_bad_models_name_the_node():
    x, w = _rand(1, 4, 8), _rand(6, 2, 3)
    cases = [
        ({"group": 4}, InvalidModel),                 # 6 output channels, group 4
        ({"auto_pad": "SAME"}, InvalidModel),
        ({"kernel_shape": [5]}, InvalidModel),
        ({"strides": [0]}, InvalidModel),
        ({"pads": [1]}, InvalidModel),
        ({"pads": [-1, 0]}, InvalidModel),
        ({"frobnicate": 1}, UnsupportedOp),
    ]
    for attrs, err in cases:
        with pytest.raises(err, match="the_node"):
            _sess("Conv", [("x", x), ("W", w)], dict({"group": 2}, **attrs))
    with pytest.raises(InvalidModel, match="the_node"):
        _sess("Conv", [("x", x), ("W", w), ("B", _rand(5))], {"group": 2})
    with pytest.raises(UnsupportedOp, match="the_node"):
        _sess("Conv", [("x", x.astype(np.float64)), ("W", w)], {"group": 2})
    with pytest.raises(InvalidModel, match="the_node"):
        _sess("MaxPool", [("x", x)], {})                       # kernel_shape missing
    with pytest.raises(InvalidModel, match="the_node"):
        _sess("AveragePool", [("x", x)], {"kernel_shape": [2], "strides": [1, 1]})
    with pytest.raises(UnsupportedOp, match="the_node"):
        _sess("MaxPool", [("x", x)], {"kernel_shape": [2], "ceil_mode": 1}, opset=9)
    with pytest.raises(UnsupportedOp, match="the_node"):
        _sess("MaxPool", [("x", _rand(1, 1, 2, 2, 2, 2))], {"kernel_shape": [1, 1, 1, 1]})


def test_pool_bad_inputs_name_the_node():
    sess = _sess("MaxPool", [("x", _rand(1, 2, 8))], {"kernel_shape": [3]})
    runner = sess._plan.runners[0]
    with pytest.raises(InvalidInput, match="the_node"):
        runner({"x": _rand(1, 2, 2)})           # smaller than the kernel
    with pytest.raises(InvalidInput, match="the_node"):
        runner({"x": _rand(1, 2, 8, 8)})        # rank
    with pytest.raises(UnsupportedOp, match="the_node"):
        runner({"x": np.zeros((1, 2, 8), np.float64)})
    sess = _sess("ConvTranspose", [("x", _rand(1, 2, 3)), ("W", _rand(2, 3, 3))],
                 {"pads": [3, 3]}, consts=("W",))
    with pytest.raises(InvalidInput, match="the_node"):
        sess.run(None, {"x": _rand(1, 2, 3)})   # output size < 1


def test_run1_read_only_input_and_threads():
    """run1 (the executor's direct call) equals the dict call; a read-only X
    works; threads sharing a runner with different shapes get their own."""
    import threading
    inputs = [("x", _rand(1, 16, 9)), ("W", _rand(32, 16, 3)), ("B", _rand(32))]
    model = _model("Conv", inputs, {"pads": [1, 1]}, 17, consts=("W", "B"))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "T"
    sess = fastlstm.InferenceSession(model.SerializeToString())
    runner = sess._plan.runners[0]
    xs = {T: _rand(1, 16, T) for T in (1, 2, 5, 9, 33)}
    exp = {T: run_ort(model, {"x": x})[0] for T, x in xs.items()}
    for T, x in xs.items():
        np.testing.assert_array_equal(runner.run1(x), runner({"x": x})[0])
        ro = x.copy()
        ro.flags.writeable = False
        np.testing.assert_allclose(runner.run1(ro), exp[T], atol=1e-4, rtol=1e-4)
    errors = []

    def work(T):
        try:
            for _ in range(200):
                np.testing.assert_allclose(runner({"x": xs[T]})[0], exp[T], atol=1e-4,
                                           rtol=1e-4)
        except Exception as e:     # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(T,)) for T in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_run1_into_a_buffer():
    inputs = [("x", _rand(1, 8, 6)), ("W", _rand(16, 8, 3)), ("B", _rand(16))]
    sess = _sess("Conv", inputs, {"pads": [1, 1]})
    runner = sess._plan.runners[0]
    x = inputs[0][1]
    buf = np.full((1, 16, 6), np.nan, np.float32)
    assert runner.run1(x, out=buf) is buf
    np.testing.assert_array_equal(buf, runner({"x": x})[0])
    for bad in (np.empty((1, 16, 5), np.float32), np.empty((1, 16, 6), np.float64),
                np.empty((1, 6, 16), np.float32).transpose(0, 2, 1)):
        with pytest.raises(InvalidInput, match="the_node"):
            runner.run1(x, out=bad)


def test_outputs_over_the_size_limit_are_refused():
    """Attributes that ask for a huge output (ConvTranspose's output_shape, a
    pool's or a Conv's pads) are refused by the size limit, naming the node."""
    x = _rand(1, 2, 4)
    cases = [("ConvTranspose", [("x", x), ("W", _rand(2, 3, 3))],
              {"output_shape": [1 << 40]}),
             ("Conv", [("x", x), ("W", _rand(3, 2, 3))], {"pads": [1 << 40, 0]}),
             ("MaxPool", [("x", x)], {"kernel_shape": [1 << 40],
                                      "pads": [(1 << 40) - 1, (1 << 40) - 1]})]
    for op, inputs, attrs in cases:
        sess = _sess(op, inputs, attrs, consts=("W",))
        with pytest.raises(InvalidInput, match="the_node.*over the limit"):
            sess.run(None, {"x": x})


# ---- Conv through the panel GEMM (kernels.conv.conv_gemm) ---------------------------------

# group-1 shapes run with the GEMM forced on: odd sizes, strides, pads, dilations (along W:
# rows copied tap by tap), batch 1 and large batches (tiles across batch items), 2-D and 3-D,
# one-channel windows read in place (a row of output, or rows of >= 24 positions)
GEMM_CONV = [
    ((1, 1, 640), (258, 1, 256), True, {"strides": [128]}),               # STFT, in place
    ((293, 1, 640), (258, 1, 256), True, {"strides": [128]}),             # copied rows
    ((2, 1, 3300), (130, 1, 128), True, {"strides": [64]}),               # 50 per row: in place
    ((293, 129, 4), (128, 129, 3), True, {"pads": [1, 1]}),
    ((293, 64, 2), (64, 64, 3), True, {"pads": [1, 1], "strides": [2]}),
    ((37, 128, 1), (1, 128, 1), True, {}),
    ((1, 64, 1), (128, 64, 3), True, {"pads": [1, 1]}),
    ((3, 5, 13), (7, 5, 4), False, {"strides": [3], "pads": [2, 3], "dilations": [2]}),
    ((5, 3, 17), (37, 3, 5), True, {"pads": [0, 4], "dilations": [3]}),
    ((1, 1, 19), (23, 1, 4), True, {"pads": [2, 1], "strides": [2]}),     # one channel, padded
    ((7, 3, 10), (20, 3, 4), True, {"auto_pad": "SAME_LOWER", "strides": [3]}),
    ((1, 2, 3), (40, 2, 3), True, {"pads": [5, 5]}),                      # rows of padding only
    ((2, 6, 9, 11), (20, 6, 3, 2), True,
     {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [2, 2]}),
    ((3, 16, 13, 15), (33, 16, 3, 3), True, {"pads": [1, 1, 1, 1]}),
    ((2, 8, 5, 7), (24, 8, 1, 1), False, {}),
    ((1, 1, 12, 40), (18, 1, 3, 5), True, {"strides": [1, 2]}),
    ((2, 4, 5, 6, 7), (16, 4, 2, 3, 2), True, {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 2]}),
]


@pytest.fixture
def gemm_on(monkeypatch):
    from fastlstm.ops import conv as conv_ops
    monkeypatch.setattr(conv_ops, "GEMM", True)


def _kernel_name(runner):
    return runner._fast[3].py_func.__name__


@pytest.mark.parametrize("xs,ws,bias,attrs", GEMM_CONV,
                         ids=[f"{c[0]}x{c[1]}-{k}" for k, c in enumerate(GEMM_CONV)])
def test_conv_gemm(xs, ws, bias, attrs, gemm_on):
    _check_kernel(xs, ws, bias, attrs, "conv_gemm")


def _check_kernel(xs, ws, bias, attrs, kernel):
    """The Conv on ``kernel`` (forced by the caller) against onnxruntime, alone
    and with each fused activation; the runner itself unchanged by fusing."""
    inputs = [("x", _rand(*xs)), ("W", _rand(*ws)), ("B", _rand(ws[0]) if bias else None)]
    _compare("Conv", inputs, attrs, 17)
    x = inputs[0][1]
    model = _model("Conv", inputs, attrs, 17, consts=("W", "B"))
    sess = fastlstm.InferenceSession(model.SerializeToString())
    (runner,) = sess._plan.runners
    plain = runner.run1(x)
    assert _kernel_name(runner) == kernel
    atol, rtol = _tol(inputs)
    exp = run_ort(model, {"x": x})[0]
    for act, ref in (("Relu", np.maximum(exp, 0)), ("Sigmoid", 1 / (1 + np.exp(-exp)))):
        f = runner.fused(act)
        got = f.run1(x)
        assert _kernel_name(f) == kernel
        np.testing.assert_allclose(got, ref, atol=atol, rtol=rtol, err_msg=act)
    np.testing.assert_array_equal(runner.run1(x), plain)


def test_conv_gemm_matches_the_panel_kernel_and_the_choice(monkeypatch):
    """The GEMM, the per-position product and the panel kernel agree within
    rounding; the automatic choice, the same at batch 1 and 293:
    ``conv_items`` for Silero's decoder, its STFT (weights that are not a
    DFT basis) and its encoder's short rows, F(4, 3) for the first encoder
    conv (kernel 3, stride 1: tests/test_conv_wino.py), the panel kernel
    for longer rows, the GEMM for a one-channel head over a few more."""
    from fastlstm.ops import conv as conv_ops
    P, G, I, W1 = "conv_panel", "conv_gemm", "conv_items", "conv_wino1"
    cases = [((1, 1, 640), (258, 1, 256), {"strides": [128]}, I),
             ((293, 1, 640), (258, 1, 256), {"strides": [128]}, I),
             ((1, 129, 4), (128, 129, 3), {"pads": [1, 1]}, W1),
             ((293, 129, 4), (128, 129, 3), {"pads": [1, 1]}, W1),
             ((2, 64, 30), (64, 64, 3), {"pads": [1, 1], "strides": [2]}, P),
             ((1, 64, 2), (64, 64, 3), {"pads": [1, 1], "strides": [2]}, I),
             ((293, 64, 2), (64, 64, 3), {"pads": [1, 1], "strides": [2]}, I),
             ((293, 128, 4), (64, 128, 3), {"pads": [1, 1], "strides": [2]}, I),
             ((293, 64, 1), (128, 64, 3), {"pads": [1, 1]}, I),
             ((1, 128, 1), (1, 128, 1), {}, I),
             ((293, 128, 1), (1, 128, 1), {}, I),
             ((2, 128, 12), (1, 128, 1), {}, G)]
    for xs, ws, attrs, want in cases:
        x = _rand(*xs)
        inputs = [("x", x), ("W", _rand(*ws)), ("B", _rand(ws[0]))]
        model = _model("Conv", inputs, attrs, 17, consts=("W", "B"))
        got = {}
        for flag, policy in (("GEMM", None), ("GEMM", True), ("GEMM", False), ("ITEMS", True)):
            monkeypatch.setattr(conv_ops, flag, policy)
            (runner,) = fastlstm.InferenceSession(model.SerializeToString())._plan.runners
            got[policy if flag == "GEMM" else I] = runner.run1(x)
            if policy is None:
                assert _kernel_name(runner) == want, (xs, ws)
            if flag == "ITEMS":
                assert _kernel_name(runner) == I, (xs, ws)
            monkeypatch.setattr(conv_ops, flag, None)
        atol, rtol = _tol(inputs)
        np.testing.assert_allclose(got[True], got[False], atol=atol, rtol=rtol)
        np.testing.assert_allclose(got[I], got[False], atol=atol, rtol=rtol)
        np.testing.assert_array_equal(got[None], got[{P: False, G: True, I: I, W1: False}[want]])


ITEMS_CONV = [  # (X shape, W shape, bias, attrs): 1-D, batches of short rows
    ((256, 129, 4), (128, 129, 3), True, {"pads": [1, 1]}),
    ((300, 40, 6), (70, 40, 3), True, {"pads": [2, 2], "strides": [3]}),
    ((9, 16, 3), (16, 16, 5), False, {"pads": [4, 4]}),      # outputs that read only padding
    ((13, 3, 3), (33, 3, 3), True, {}),
    ((40, 8, 7), (24, 8, 4), True, {"pads": [0, 3], "strides": [2]}),
    ((11, 20, 5), (40, 20, 3), True, {"auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("xs,ws,bias,attrs", ITEMS_CONV,
                         ids=[f"{c[0]}x{c[1]}-{k}" for k, c in enumerate(ITEMS_CONV)])
def test_conv_items(xs, ws, bias, attrs, monkeypatch):
    """``conv_items`` (one product per output position, rows the items)
    against onnxruntime, alone and with each fused activation."""
    from fastlstm.ops import conv as conv_ops
    monkeypatch.setattr(conv_ops, "ITEMS", True)
    _check_kernel(xs, ws, bias, attrs, "conv_items")


def test_conv_gemm_fed_weights_threads_and_buffers(gemm_on):
    """Weights fed as inputs (packed per call), shapes changing between calls,
    threads sharing a runner, run1 into a buffer: all on the GEMM path."""
    import threading
    model = _model("Conv", [("x", _rand(2, 6, 9)), ("W", _rand(20, 6, 3)), ("B", _rand(20))],
                   {"pads": [1, 1], "strides": [2]}, 17)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "T"
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "M"
    model.graph.input[2].type.tensor_type.shape.dim[0].dim_param = "M"
    sess = fastlstm.InferenceSession(model.SerializeToString())
    for N, T, M in [(2, 9, 20), (1, 4, 20), (5, 9, 3), (300, 2, 33), (2, 9, 20)]:
        feed = {"x": _rand(N, 6, T), "W": _rand(M, 6, 3), "B": _rand(M)}
        np.testing.assert_allclose(sess.run(None, feed)[0], run_ort(model, feed)[0],
                                   atol=1e-4, rtol=1e-4)
    inputs = [("x", _rand(1, 16, 9)), ("W", _rand(32, 16, 3)), ("B", _rand(32))]
    model = _model("Conv", inputs, {"pads": [1, 1]}, 17, consts=("W", "B"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "T"
    runner = fastlstm.InferenceSession(model.SerializeToString())._plan.runners[0]
    xs = {(N, T): _rand(N, 16, T) for N, T in ((1, 1), (3, 2), (64, 5), (1, 33), (9, 9))}
    exp = {k: run_ort(model, {"x": x})[0] for k, x in xs.items()}
    for k, x in xs.items():
        buf = np.full(exp[k].shape, np.nan, np.float32)
        assert runner.run1(x, out=buf) is buf
        assert _kernel_name(runner) == "conv_gemm"
        np.testing.assert_allclose(buf, exp[k], atol=1e-4, rtol=1e-4)
        ro = x.copy()
        ro.flags.writeable = False
        np.testing.assert_array_equal(runner.run1(ro), buf)
    errors = []

    def work(k):
        try:
            for _ in range(100):
                np.testing.assert_allclose(runner({"x": xs[k]})[0], exp[k], atol=1e-4,
                                           rtol=1e-4)
        except Exception as e:     # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
