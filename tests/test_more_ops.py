"""Pad, Tile, Resize, the normalisations and the elementwise math ops, one node at a
time in each form their opsets define, against onnxruntime (and onnx.reference
where onnxruntime refuses a shape we run); refusals name the node."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import fastlstm
from fastlstm import InvalidInput, InvalidModel, UnsupportedOp
from fastlstm.ops.table import OPS
from helpers import run_ort

F, D, I64, I32 = np.float32, np.float64, np.int64, np.int32
NAN, INF = np.nan, np.inf
R = np.random.default_rng(11)
X4 = R.standard_normal((1, 2, 5, 6)).astype(F)
X3 = R.standard_normal((2, 3, 4)).astype(F)
X2 = R.standard_normal((5, 6)).astype(F)
#: special values and ordinary ones, for the unary math ops
SPECIAL = np.concatenate([
    np.array([NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3e38, -3e38, 1e-40, 100.0,
              -100.0, 88.0, -88.0], F),
    R.standard_normal(12).astype(F) * 3])


def _model(op, inputs, attrs, opset, n_out=1, consts=()):
    """inputs: (name, array) pairs, ("", None) for an absent optional input; names in
    consts become initializers."""
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, [n for n, _ in inputs], outs, name="the_node", **attrs)
    g_in = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                          list(a.shape))
            for n, a in inputs if n and n not in consts]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if n and n in consts]
    g = helper.make_graph([node], "g", g_in, [onnx.ValueInfoProto(name=o) for o in outs],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _feed(inputs, consts=()):
    return {n: a for n, a in inputs if n and n not in consts}


def _compare(got, exp, rtol, atol):
    assert len(got) == len(exp)
    for g, e in zip(got, exp):
        assert g.shape == e.shape, (g.shape, e.shape)
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        if e.dtype.kind == "f":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(g, e)


def check(op, inputs, attrs, opset, n_out=1, consts=(), rtol=1e-5, atol=1e-6, fold=True):
    """fastlstm == onnxruntime on one node, inputs fed (except ``consts``; run three
    times: the second run of a signature specialises it) and, with ``fold``, all inputs
    as initializers (the node is then computed at import)."""
    model = _model(op, inputs, attrs, opset, n_out, consts)
    exp = run_ort(model, _feed(inputs, consts))
    sess = fastlstm.InferenceSession(model.SerializeToString())
    for _ in range(3):      # the general path, then the run specialised to this signature
        _compare(sess.run(None, _feed(inputs, consts)), exp, rtol, atol)
    if fold:
        names = [n for n, _ in inputs if n]
        model = _model(op, inputs, attrs, opset, n_out, consts=names)
        sess = fastlstm.InferenceSession(model.SerializeToString())
        _compare(sess.run(None, {}), exp, rtol, atol)


def _ids(cases):
    return [f"{c[0]}-{c[3]}-{k}" for k, c in enumerate(cases)]


# ---------------------------------------------------------------- Pad

def _pads(*p):
    return np.array(p, I64)


PAD_CASES = []
for _mode in ("constant", "reflect", "edge"):
    for _p in ([0, 1, 2, 1], [1, 0, 0, 2], [0, -1, 0, 2], [1, 2, -1, -2], [0, 0, 0, 0]):
        _attrs = {"mode": _mode, "pads": _p}
        if _mode == "constant":
            _attrs["value"] = 1.5
        PAD_CASES.append(("Pad", [("x", X2)], _attrs, 7, {}))
        PAD_CASES.append(("Pad", [("x", X2)], _attrs, 10, {}))
        PAD_CASES.append(("Pad", [("x", X2), ("p", _pads(*_p))], {"mode": _mode}, 11, {}))
        PAD_CASES.append(("Pad", [("x", X2), ("p", _pads(*_p)), ("v", np.array(-2.0, F))],
                          {"mode": _mode}, 13, {}))
    PAD_CASES.append(("Pad", [("x", X4), ("p", _pads(0, 0, 1, 2, 0, 0, 2, 1))],
                      {"mode": _mode}, 13, {}))
    # axes (opset 18 on), negative axes, a subset of the axes
    PAD_CASES.append(("Pad", [("x", X4), ("p", _pads(2, 1, 1, 3)), ("", None),
                              ("a", np.array([-1, 2], I64))], {"mode": _mode}, 18, {}))
    PAD_CASES.append(("Pad", [("x", X4), ("p", _pads(1, 2)), ("v", np.array(7.0, F)),
                              ("a", np.array([3], I64))], {"mode": _mode}, 19, {}))
    PAD_CASES.append(("Pad", [("x", X2), ("p", _pads(1, 0, 1, 2))], {"mode": _mode}, 21, {}))
for _p in ([0, 2, 0, 3], [0, 8, 1, 13], [0, -1, 0, 2], [2, 1, -1, 4]):      # wrap, beyond dims
    PAD_CASES.append(("Pad", [("x", X2), ("p", _pads(*_p))], {"mode": "wrap"}, 19, {}))
PAD_CASES += [
    ("Pad", [("x", X2)], {"pads": [0, 1, 0, 1]}, 7, {}),                     # default constant 0
    ("Pad", [("x", X2), ("p", _pads(1, 1, 1, 1))], {}, 11, {}),
    ("Pad", [("x", np.arange(12, dtype=I64).reshape(3, 4)), ("p", _pads(1, 2, 0, 1)),
             ("v", np.array(-9, I64))], {}, 13, {}),
    ("Pad", [("x", np.arange(12, dtype=I32).reshape(3, 4)), ("p", _pads(1, 2, 0, 1))],
     {"mode": "reflect"}, 18, {}),
    ("Pad", [("x", X2.astype(D)), ("p", _pads(1, 2, 0, 1))], {"mode": "edge"}, 18, {}),
    ("Pad", [("x", np.array([[True, False]])), ("p", _pads(1, 1, 0, 1)),
             ("v", np.array(True))], {}, 18, {}),
    ("Pad", [("x", np.array([1.0, NAN, INF], F)), ("p", _pads(2, 2))], {"mode": "reflect"},
     13, {}),
    ("Pad", [("x", np.array([1.0, 2.0], F)), ("p", _pads(1, 1)), ("v", np.array(NAN, F))],
     {}, 13, {}),
    ("Pad", [("x", np.zeros((2, 0), F)), ("p", _pads(0, 1, 1, 1))], {}, 13, {}),
    ("Pad", [("x", X2), ("p", _pads(0, -3, 0, 1))], {}, 13, {}),              # crop to nothing
]


@pytest.mark.parametrize("op,inputs,attrs,opset,kw", PAD_CASES, ids=_ids(PAD_CASES))
def test_pad(op, inputs, attrs, opset, kw):
    check(op, inputs, attrs, opset, **kw)
    # pads, value and axes as initializers, data fed (the usual exported form)
    if len(inputs) > 1:
        check(op, inputs, attrs, opset, consts=[n for n, _ in inputs[1:] if n], fold=False)


def test_pad_declaration():
    d = OPS["Pad"]
    assert [f.since for f in d.forms] == [2, 11, 18]
    assert [f.shape_params for f in d.forms] == [(), (1,), (1, 3)]
    assert not d.zero_preserving        # a constant other than 0 pads zeros with non-zeros


def test_pad_errors_name_the_node():
    x = X2
    for pads in ([0, 3, 0, 1], [0, 6, 0, 0]):        # reflect pads must stay below the size
        m = _model("Pad", [("x", x[:, :3]), ("p", _pads(*pads))], {"mode": "reflect"}, 13,
                   consts=["p"])
        with pytest.raises(InvalidInput, match="the_node"):
            fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": x[:, :3]})
    m = _model("Pad", [("x", x), ("p", _pads(0, 1, 0))], {}, 13)
    with pytest.raises(InvalidInput, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": x, "p": _pads(0, 1, 0)})
    m = _model("Pad", [("x", x), ("p", _pads(0, -4, 0, -3))], {}, 13, consts=["p"])
    with pytest.raises(InvalidInput, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    m = _model("Pad", [("x", np.zeros((2, 0), F)), ("p", _pads(0, 1, 0, 1))], {"mode": "edge"},
               13, consts=["p"])
    with pytest.raises(InvalidInput, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": np.zeros((2, 0), F)})
    m = _model("Pad", [("x", x), ("p", _pads(1, 1)), ("", None), ("a", np.array([1, -1], I64))],
               {}, 18, consts=["p", "a"])
    with pytest.raises(InvalidInput, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    m = _model("Pad", [("x", x), ("p", _pads(1, 1, 1, 1))], {"mode": "mirror"}, 13)
    with pytest.raises(InvalidModel, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString())


# ---------------------------------------------------------------- Tile

TILE_CASES = [
    ("Tile", [("x", X3), ("r", np.array([1, 2, 3], I64))], {}, 7, {}),
    ("Tile", [("x", X3), ("r", np.array([2, 1, 1], I64))], {}, 13, {}),
    ("Tile", [("x", X3), ("r", np.array([1, 0, 2], I64))], {}, 13, {}),
    ("Tile", [("x", np.arange(6, dtype=I64).reshape(2, 3)), ("r", np.array([3, 2], I64))],
     {}, 13, {}),
    ("Tile", [("x", np.array([True, False])), ("r", np.array([3], I64))], {}, 13, {}),
    ("Tile", [("x", np.array(3.5, F).reshape(1)), ("r", np.array([4], I64))], {}, 7, {}),
]


@pytest.mark.parametrize("op,inputs,attrs,opset,kw", TILE_CASES, ids=_ids(TILE_CASES))
def test_tile(op, inputs, attrs, opset, kw):
    check(op, inputs, attrs, opset, **kw)
    check(op, inputs, attrs, opset, consts=["r"], fold=False)


def test_tile_declaration_and_errors():
    d = OPS["Tile"]
    assert [f.since for f in d.forms] == [6] and d.forms[0].shape_params == (1,)
    assert d.zero_preserving
    for reps in ([1, 2], [1, -1, 1]):
        m = _model("Tile", [("x", X3), ("r", np.array(reps, I64))], {}, 13, consts=["r"])
        with pytest.raises(InvalidInput, match="the_node"):
            fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": X3})


# ---------------------------------------------------------------- Resize

TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
              "tf_half_pixel_for_nn"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [np.array(s, F) for s in ([1, 1, 2, 2], [1, 1, 0.6, 0.5], [1, 1, 1.7, 0.7],
                                   [1, 1, 3, 1.3], [1, 1, 0.33, 2.5])]
EMPTY = np.array([], F)


def _resize_cases():
    cases = []
    for s in SCALES:
        for mode in ("nearest", "linear"):
            cases.append(("Resize", [("x", X4), ("s", s)], {"mode": mode}, 10, {}))
    for mode, nms in (("nearest", NEAREST), ("linear", [None])):
        for ct in TRANSFORMS + ["half_pixel_symmetric"]:
            for nm in nms:
                attrs = {"mode": mode, "coordinate_transformation_mode": ct}
                if nm:
                    attrs["nearest_mode"] = nm
                opsets = (19,) if ct == "half_pixel_symmetric" else (11, 13, 18, 19)
                for k, s in enumerate(SCALES[k0] for k0 in ((0, 2, 4) if nm in (None, "floor")
                                                            else (1, 3))):
                    o = opsets[(k + len(cases)) % len(opsets)]
                    cases.append(("Resize", [("x", X4), ("roi", EMPTY), ("s", s)], attrs, o,
                                  {}))
                sizes = np.array([1, 2, 9, 4], I64)
                cases.append(("Resize", [("x", X4), ("", None), ("", None), ("z", sizes)],
                              attrs, 13, {}))
                cases.append(("Resize", [("x", X4), ("roi", EMPTY), ("s", EMPTY),
                                         ("z", np.array([1, 2, 3, 11], I64))], attrs, 11, {}))
                # to a single position (align_corners and pytorch_half_pixel special-case it)
                cases.append(("Resize", [("x", X4), ("", None), ("", None),
                                         ("z", np.array([1, 2, 1, 1], I64))], attrs, 13, {}))
                cases.append(("Resize", [("x", X2), ("", None), ("s", np.array([1.5, 0.4], F))],
                              attrs, 13, {}))
    # cubic: coefficient a, exclude_outside, every transform, 2-D and NCHW, opset 10 too
    for k, ct in enumerate(TRANSFORMS + ["half_pixel_symmetric", "tf_crop_and_resize"]):
        for j, extra in enumerate(({}, {"cubic_coeff_a": -0.5}, {"exclude_outside": 1},
                                   {"cubic_coeff_a": -0.6, "exclude_outside": 1})):
            attrs = dict(extra, mode="cubic", coordinate_transformation_mode=ct)
            x, s = ((X4, SCALES[(k + j) % len(SCALES)]) if (k + j) % 2 else
                    (X2, np.array([[2, 2], [0.6, 0.5], [1.7, 0.7], [3, 1.3]][j], F)))
            roi = (np.array([0] * (x.ndim - 2) + [0.1, -0.2] + [1] * (x.ndim - 2) + [0.8, 1.3],
                            F) if ct == "tf_crop_and_resize" else EMPTY)
            # (cubic weights are partly negative: cancellation, so atol 1e-5)
            cases.append(("Resize", [("x", x), ("roi", roi), ("s", s)], attrs,
                          19 if ct == "half_pixel_symmetric" else 13, {"atol": 1e-5}))
    cases.append(("Resize", [("x", X4), ("roi", EMPTY), ("s", EMPTY),
                             ("z", np.array([1, 2, 9, 4], I64))], {"mode": "cubic"}, 11, {}))
    for s in SCALES[:2]:
        cases.append(("Resize", [("x", X4), ("s", s)], {"mode": "cubic"}, 10, {}))
    # 2-D and 3-D linear (bilinear, trilinear), NHWC
    for ct in TRANSFORMS:
        cases.append(("Resize", [("x", X3), ("", None), ("s", np.array([2, 0.5, 1.5], F))],
                      {"mode": "linear", "coordinate_transformation_mode": ct}, 13, {}))
        cases.append(("Resize", [("x", X4), ("", None), ("s", np.array([1, 2.0, 0.5, 1], F))],
                      {"mode": "linear", "coordinate_transformation_mode": ct}, 13, {}))
    # tf_crop_and_resize: roi used, extrapolation outside it
    for mode in ("nearest", "linear"):
        for roi in ([0, 0, 0.2, 0.1, 1, 1, 0.9, 0.8], [0, 0, -0.3, 0.1, 1, 1, 1.4, 0.8],
                    [0, 0, 0.5, 0.5, 1, 1, 0.5, 0.7]):
            attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
                     "extrapolation_value": -7.0}
            cases.append(("Resize", [("x", X4), ("roi", np.array(roi, F)),
                                     ("s", np.array([1, 1, 2, 1.5], F))], attrs, 13, {}))
            cases.append(("Resize", [("x", X4), ("roi", np.array(roi, F)), ("", None),
                                     ("z", np.array([1, 2, 7, 4], I64))], attrs, 19, {}))
            cases.append(("Resize", [("x", X4), ("roi", np.array(roi[2:4] + roi[6:8], F)),
                                     ("s", np.array([2, 1.5], F))], dict(attrs, axes=[2, 3]),
                          18, {}))
    # opset 18: axes, keep_aspect_ratio_policy (with sizes)
    for mode in ("nearest", "linear"):
        for pol in ("stretch", "not_larger", "not_smaller"):
            cases.append(("Resize", [("x", X4), ("", None), ("", None),
                                     ("z", np.array([7, 9], I64))],
                          {"mode": mode, "keep_aspect_ratio_policy": pol, "axes": [2, 3]},
                          18, {}))
            if mode == "nearest":   # (the policy's scale then applies to N and C too)
                cases.append(("Resize", [("x", X4), ("", None), ("", None),
                                         ("z", np.array([1, 2, 4, 17], I64))],
                              {"mode": mode, "keep_aspect_ratio_policy": pol}, 19, {}))
        cases.append(("Resize", [("x", X4), ("", None), ("s", np.array([0.5, 3], F))],
                      {"mode": mode, "axes": [-1, 2]}, 18, {}))
        cases.append(("Resize", [("x", X4), ("", None), ("", None), ("z", np.array([11], I64))],
                      {"mode": mode, "axes": [3]}, 19, {}))
    # other element types: nearest moves any type, linear truncates integer results
    for dt in (I32, np.int8, np.uint8):
        xi = R.integers(-100, 100, (1, 2, 5, 6)).astype(dt)
        for mode in ("nearest", "linear"):
            cases.append(("Resize", [("x", xi), ("", None), ("s", np.array([1, 1, 1.5, 0.5],
                                                                           F))],
                          {"mode": mode}, 13, {}))
    # special values travel through nearest, and through linear where weights are 1 or 0
    xs = np.array([[NAN, INF, -INF, 1.0]], F)
    cases.append(("Resize", [("x", xs), ("", None), ("s", np.array([1, 2], F))],
                  {"mode": "nearest"}, 13, {}))
    cases.append(("Resize", [("x", xs), ("", None), ("s", np.array([1, 1], F))],
                  {"mode": "linear"}, 13, {}))
    return cases


RESIZE_CASES = _resize_cases()


@pytest.mark.parametrize("op,inputs,attrs,opset,kw", RESIZE_CASES, ids=_ids(RESIZE_CASES))
def test_resize(op, inputs, attrs, opset, kw):
    check(op, inputs, attrs, opset, fold=False, **kw)
    check(op, inputs, attrs, opset, consts=[n for n, _ in inputs[1:] if n], **kw)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("ct", ["half_pixel", "asymmetric", "pytorch_half_pixel"])
@pytest.mark.parametrize("shape,scales", [((7,), [2.3]), ((7,), [0.6]),
                                          ((2, 3, 4, 5), [1.5, 2, 0.5, 1])])
def test_resize_where_onnxruntime_refuses(mode, ct, shape, scales):
    """onnxruntime's linear and cubic Resize take 2-D to 5-D (cubic 2-D and 4-D) with
    the outer scales 1; we run any rank (separable), checked against onnx.reference.
    (Not align_corners: onnx.reference divides by the unrounded output length.)"""
    from onnx.reference import ReferenceEvaluator
    x = (R.standard_normal(shape) * 3).astype(F)
    inputs = [("x", x), ("", None), ("s", np.array(scales, F))]
    m = _model("Resize", inputs, {"mode": mode, "coordinate_transformation_mode": ct},
               13, consts=["s"])
    exp = ReferenceEvaluator(m).run(None, {"x": x})[0]
    got = fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-5)


def test_resize_declaration():
    d = OPS["Resize"]
    assert [f.since for f in d.forms] == [10, 11, 18]
    assert [f.shape_params for f in d.forms] == [(1,), (2, 3), (2, 3)]


def test_resize_refusals_name_the_node():
    base = [("x", X4), ("", None), ("s", np.array([1, 1, 2, 2], F))]
    for attrs, opset in (({"mode": "linear", "antialias": 1}, 18),
                         ({"mode": "cubic", "antialias": 1}, 19),
                         ({"mode": "nearest", "exclude_outside": 1}, 13)):
        m = _model("Resize", base, attrs, opset, consts=["s"])
        with pytest.raises(UnsupportedOp, match="the_node") as e:
            fastlstm.InferenceSession(m.SerializeToString())
        assert e.value.node_name == "the_node" and e.value.op_type == "Resize"
    for attrs in ({"mode": "bicubic"}, {"coordinate_transformation_mode": "centre"},
                  {"nearest_mode": "nearest"}):
        m = _model("Resize", base, attrs, 13, consts=["s"])
        with pytest.raises(InvalidModel, match="the_node"):
            fastlstm.InferenceSession(m.SerializeToString())
    xi = np.arange(24, dtype=I32).reshape(1, 1, 4, 6)
    m = _model("Resize", [("x", xi), ("", None), ("s", np.array([1, 1, 2, 2], F))],
               {"mode": "cubic"}, 13, consts=["s"])
    with pytest.raises(UnsupportedOp, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": xi})
    m = _model("Resize", [("x", X4), ("", None)], {}, 13)
    with pytest.raises(InvalidModel, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString())
    # both scales and sizes, or the wrong count: InvalidInput at run time
    for ins in ([("x", X4), ("", None), ("s", np.array([1, 1, 2, 2], F)),
                 ("z", np.array([1, 2, 3, 3], I64))],
                [("x", X4), ("", None), ("s", np.array([2, 2], F))],
                [("x", X4), ("", None), ("s", np.array([1, 1, -2, 2], F))]):
        m = _model("Resize", ins, {}, 13)
        with pytest.raises(InvalidInput, match="the_node"):
            fastlstm.InferenceSession(m.SerializeToString()).run(None, _feed(ins))


# ---------------------------------------------------------------- normalisation

C = 3
BN_P = [R.standard_normal(C).astype(F) for _ in range(3)] + [R.random(C).astype(F) + 0.1]


def _bn(x, params=BN_P, dtype=None):
    names = ["s", "b", "m", "v"]
    return [("x", x)] + [(n, p if dtype is None else p.astype(dtype))
                         for n, p in zip(names, params)]


NORM_CASES = []
for _o in (7, 9, 14, 15):
    for _shape in ((2, 3), (2, 3, 4), (2, 3, 4, 5)):
        _x = R.standard_normal(_shape).astype(F)
        NORM_CASES.append(("BatchNormalization", _bn(_x), {"epsilon": 1e-3}, _o, {}))
    NORM_CASES.append(("BatchNormalization", _bn(X3.astype(D), dtype=D), {}, _o, {}))
NORM_CASES += [
    ("BatchNormalization", _bn(X3), {"spatial": 1, "momentum": 0.5}, 7, {}),
    ("BatchNormalization", _bn(X4.reshape(2, 3, 10)[:, :, :4].copy(),
                               [R.standard_normal((3, 4)).astype(F) for _ in range(3)]
                               + [R.random((3, 4)).astype(F) + 0.1]),
     {"spatial": 0}, 7, {}),
    # opset 15: X float16 with float32 parameters
    ("BatchNormalization", _bn(X3.astype(np.float16)), {}, 15, {"rtol": 2e-3, "atol": 2e-3}),
    ("BatchNormalization", _bn(np.array([[NAN, INF, -INF]], F).T.reshape(1, 3)), {}, 15, {}),
    ("BatchNormalization", [("x", X3), ("s", BN_P[0]), ("b", BN_P[1]), ("m", BN_P[2]),
                            ("v", BN_P[3])], {"training_mode": 0}, 14, {}),
]
for _o in (7, 13, 22):
    for _shape in ((2, 3, 4), (2, 3, 4, 5), (1, 3, 7)):
        _x = (R.standard_normal(_shape) * 3 + 1).astype(F)
        NORM_CASES.append(("InstanceNormalization", [("x", _x), ("s", BN_P[0]), ("b", BN_P[1])],
                           {"epsilon": 1e-2}, _o, {}))
        NORM_CASES.append(("InstanceNormalization", [("x", _x), ("s", BN_P[0]), ("b", BN_P[1])],
                           {}, _o, {}))
_XL = R.standard_normal((2, 3, 4, 5)).astype(F) * 2 + 0.5
for _axis in (-1, 1, 2, 0, -3):
    _ns = _XL.shape[_axis % 4:]
    _s, _b = R.standard_normal(_ns).astype(F), R.standard_normal(_ns).astype(F)
    for _n in (1, 2, 3):
        NORM_CASES.append(("LayerNormalization", [("x", _XL), ("s", _s), ("b", _b)],
                           {"axis": _axis}, 17, {"n_out": _n}))
    NORM_CASES.append(("LayerNormalization", [("x", _XL), ("s", _s)],
                       {"axis": _axis, "epsilon": 0.1}, 17, {"n_out": 3}))
    NORM_CASES.append(("LayerNormalization", [("x", _XL.astype(D)), ("s", _s.astype(D)),
                                              ("b", _b.astype(D))], {"axis": _axis}, 17,
                       {"n_out": 3}))
NORM_CASES += [
    ("LayerNormalization", [("x", _XL), ("s", np.array([2.0], F)),
                            ("b", R.standard_normal((1, 5)).astype(F))], {"axis": 2}, 18,
     {"n_out": 3}),
    ("LayerNormalization", [("x", _XL), ("s", R.standard_normal(5).astype(F))],
     {"axis": 2, "stash_type": 1}, 21, {"n_out": 2}),
    ("LayerNormalization", [("x", _XL[0, 0]), ("s", np.ones(5, F))], {}, 17, {"n_out": 3}),
]


@pytest.mark.parametrize("op,inputs,attrs,opset,kw", NORM_CASES, ids=_ids(NORM_CASES))
def test_norm(op, inputs, attrs, opset, kw):
    check(op, inputs, attrs, opset, **kw)
    check(op, inputs, attrs, opset, consts=[n for n, _ in inputs[1:]], fold=False, **kw)


def test_norm_refusals_name_the_node():
    m = _model("BatchNormalization", _bn(X3), {"training_mode": 1}, 15)
    with pytest.raises(UnsupportedOp, match="the_node.*training_mode") as e:
        fastlstm.InferenceSession(m.SerializeToString())
    assert e.value.node_name == "the_node"
    for opset, n_out in ((15, 3), (9, 5), (7, 2)):
        m = _model("BatchNormalization", _bn(X3), {}, opset, n_out=n_out)
        with pytest.raises(UnsupportedOp, match="the_node"):
            fastlstm.InferenceSession(m.SerializeToString())
    m = _model("BatchNormalization", _bn(X3), {"is_test": 0}, 7)    # not an attribute of 7
    with pytest.raises(UnsupportedOp, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString())
    m = _model("BatchNormalization", _bn(X3, [np.ones(4, F)] * 4), {}, 15,
               consts=["s", "b", "m", "v"])
    with pytest.raises(InvalidInput, match="the_node"):      # 3 channels, 4 given
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": X3})
    m = _model("InstanceNormalization", [("x", X2), ("s", BN_P[0]), ("b", BN_P[1])], {}, 13,
               consts=["s", "b"])
    with pytest.raises(InvalidInput, match="the_node"):      # rank 2
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": X2})
    for attrs, s in (({"axis": 3}, np.ones(4, F)), ({"axis": -1}, np.ones(3, F))):
        m = _model("LayerNormalization", [("x", X3), ("s", s)], attrs, 17, consts=["s"])
        with pytest.raises(InvalidInput, match="the_node"):
            fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": X3})
    m = _model("LayerNormalization", [("x", X3), ("s", np.ones(4, F))], {"stash_type": 7}, 17)
    with pytest.raises(UnsupportedOp, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString())


# ---------------------------------------------------------------- elementwise

def _ew_cases():
    cases = []
    x, xd = SPECIAL, SPECIAL.astype(D)
    for op, opsets, f64 in (("Sqrt", (7, 13), True), ("Exp", (7, 13), True),
                            ("Log", (7, 13), True), ("Abs", (7, 13), True),
                            ("Neg", (7, 13), True), ("Reciprocal", (7, 13), True),
                            ("Erf", (9, 13), False), ("Softplus", (7, 22), False),
                            ("HardSwish", (14, 22), False)):
        for o in opsets:
            cases.append((op, [("x", x)], {}, o, {}))
            if f64:
                cases.append((op, [("x", xd)], {}, o, {}))
    for op in ("Abs", "Neg"):
        for dt in (I32, I64, np.int8):
            cases.append((op, [("x", np.array([-5, 0, 3, -7, 100], dt))], {}, 13, {}))
    cases.append(("Abs", [("x", np.array([0, 5, 255], np.uint8))], {}, 13, {}))
    for op, attrs, opsets in (("LeakyRelu", {"alpha": 0.3}, (7, 16)), ("LeakyRelu", {}, (7,)),
                              ("Elu", {"alpha": 0.7}, (7, 22)), ("Elu", {}, (22,)),
                              ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, (7, 22)),
                              ("HardSigmoid", {}, (7,))):
        for o in opsets:
            cases.append((op, [("x", x)], attrs, o, {}))
    # Pow: float and integer exponents, mixed types (opset 12 on), broadcasting
    b = np.array([2., -2., 0., 0., NAN, INF, -INF, 1., 1., 4., -8., 0.5, 3., 1e10], F)
    e = np.array([3., 3., -1., 0., 0., -1., 3., NAN, INF, 0.5, 1 / 3, -2., 2., 5.], F)
    ei = np.array([2, 3, -1, 0, 0, -1, 3, 2, 1, 2, 3, -2, 2, 5], I64)
    for o in (7, 12, 13, 15):
        cases.append(("Pow", [("a", b), ("b", e)], {}, o, {}))
        cases.append(("Pow", [("a", b.reshape(2, 7)), ("b", np.array([[2.], [0.5]], F))], {},
                      o, {}))
        cases.append(("Pow", [("a", b.astype(D)), ("b", e.astype(D))], {}, o, {}))
    for o in (12, 13, 15):
        cases.append(("Pow", [("a", b), ("b", ei)], {}, o, {}))
        cases.append(("Pow", [("a", b), ("b", np.array(2, I32))], {}, o, {}))
        cases.append(("Pow", [("a", b), ("b", e.astype(D))], {}, o, {}))
        cases.append(("Pow", [("a", b.astype(D)), ("b", e)], {}, o, {}))
        cases.append(("Pow", [("a", np.array([2, -3, 5, 0, 1, -1, 7, -2, 3], I64)),
                              ("b", np.array([3, 3, 2, 0, -1, -1, -2, -1, 39], I64))], {}, o, {}))
        cases.append(("Pow", [("a", np.array([2, -3, 5, 0, 1, 7], I32)),
                              ("b", np.array([3, 3, 2, 0, 5, 2], I32))], {}, o, {}))
        cases.append(("Pow", [("a", np.array([2, 3, 5, 0, 1, 7], I64)),
                              ("b", np.array([3, 0.5, 2.7, 0, 5, -1], F))], {}, o, {}))
        cases.append(("Pow", [("a", np.array([2, 3, 5, 0, 1, 7], I32)),
                              ("b", np.array([3, 0.5, 2.7, 0, 5, -1], D))], {}, o, {}))
    # variadic Min, Max, Sum, Mean: one to three inputs with broadcasting, NaN and inf
    A = np.array([[1., NAN, 3., -INF], [0., -0., 5., 2.]], F)
    Bv = np.array([NAN, 2., INF, -1.], F)
    Cv = np.array([[7.], [NAN]], F)
    for op, opsets in (("Min", (8, 12, 13)), ("Max", (8, 12, 13)), ("Sum", (8, 13)),
                       ("Mean", (8, 13))):
        for o in opsets:
            cases.append((op, [("a", A)], {}, o, {}))
            cases.append((op, [("a", A), ("b", Bv)], {}, o, {}))
            cases.append((op, [("a", A), ("b", Bv), ("c", Cv)], {}, o, {}))
            if op != "Mean":
                cases.append((op, [("a", A.astype(D)), ("b", Bv.astype(D))], {}, o, {}))
        cases.append((op, [("a", A), ("b", A[::-1].copy())], {}, 7, {}))   # version 6
        if op in ("Min", "Max"):
            for dt in (I32, I64, np.uint8):
                cases.append((op, [("a", np.array([[1, 5, 3]], dt)),
                                   ("b", np.array([[4], [2]], dt))], {}, 13, {}))
    # Clip: attributes (6-10), inputs (11 on), absent min or max, ints from 12
    xc = np.array([NAN, INF, -INF, -5., -1., 0., 0.5, 1., 2., 10.], F)
    for o in (7, 10):
        for attrs in ({"min": -1.0, "max": 2.0}, {"min": -1.0}, {"max": 2.0}, {}):
            cases.append(("Clip", [("x", xc)], attrs, o, {}))
    lo, hi = np.array(-1, F), np.array(2, F)
    for o in (11, 12, 13):
        cases += [
            ("Clip", [("x", xc), ("lo", lo), ("hi", hi)], {}, o, {}),
            ("Clip", [("x", xc), ("", None), ("hi", hi)], {}, o, {}),
            ("Clip", [("x", xc), ("lo", lo)], {}, o, {}),
            ("Clip", [("x", xc)], {}, o, {}),
            ("Clip", [("x", xc), ("lo", np.array(3, F)), ("hi", hi)], {}, o, {}),  # min > max
            ("Clip", [("x", xc), ("lo", np.array(NAN, F)), ("hi", hi)], {}, o, {}),
        ]
    for o in (12, 13):
        for dt in (I32, I64, np.int8, np.uint8):
            xi = np.array([0, 5, 100, 7, 3], dt)
            cases.append(("Clip", [("x", xi), ("lo", np.array(2, dt)),
                                   ("hi", np.array(50, dt))], {}, o, {}))
            cases.append(("Clip", [("x", xi), ("", None), ("hi", np.array(50, dt))], {}, o, {}))
        cases.append(("Clip", [("x", xc.astype(D)), ("lo", np.array(-1, D))], {}, o, {}))
    # comparisons and logic
    ca = np.array([NAN, 1., 2., INF, -INF, 3.], F)
    cb = np.array([1., NAN, 2., INF, 0., 2.], F)
    for op in ("LessOrEqual", "GreaterOrEqual"):
        for o in (12, 16):
            cases.append((op, [("a", ca), ("b", cb)], {}, o, {}))
            cases.append((op, [("a", ca.reshape(2, 3)), ("b", cb[:3])], {}, o, {}))
            cases.append((op, [("a", np.array([1, 2, 3], I64)),
                               ("b", np.array([[2], [1]], I64))], {}, o, {}))
            cases.append((op, [("a", ca.astype(D)), ("b", cb.astype(D))], {}, o, {}))
    t, u = np.array([True, False, True, False]), np.array([[True], [False]])
    for op in ("And", "Or"):
        for o in (7, 13):
            cases.append((op, [("a", t), ("b", u)], {}, o, {}))
            cases.append((op, [("a", t), ("b", t[::-1].copy())], {}, o, {}))
    # ReduceMin (NaN is left out: onnxruntime's answer depends on where it sits)
    xr = (R.standard_normal((2, 3, 4)) * 3).astype(F)
    xr[0, 1, 2], xr[1, 0, 0] = -INF, INF
    for o in (7, 11, 12, 13):
        for attrs in ({}, {"axes": [1]}, {"axes": [0, -1], "keepdims": 0}, {"keepdims": 0}):
            cases.append(("ReduceMin", [("x", xr)], attrs, o, {}))
            if o >= 12:
                cases.append(("ReduceMin", [("x", (xr * 10).clip(-99, 99).astype(np.int8))],
                              attrs, o, {}))
                cases.append(("ReduceMin", [("x", (xr * 10).clip(-99, 99).astype(I64))],
                              attrs, o, {}))
    for o in (18, 20):
        for axes, attrs in ((None, {}), ([1], {}), ([0, -1], {"keepdims": 0}), ([], {}),
                            ([], {"noop_with_empty_axes": 1}),
                            (None, {"noop_with_empty_axes": 1}),
                            ([2], {"noop_with_empty_axes": 1})):
            ins = [("x", xr)] + ([("a", np.array(axes, I64))] if axes is not None else [])
            cases.append(("ReduceMin", ins, attrs, o, {}))
    cases.append(("ReduceMin", [("x", xr > 0), ("a", np.array([1], I64))], {}, 20, {}))
    return cases


EW_CASES = _ew_cases()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("op,inputs,attrs,opset,kw", EW_CASES, ids=_ids(EW_CASES))
def test_elementwise(op, inputs, attrs, opset, kw):
    check(op, inputs, attrs, opset, **kw)


def test_reduce_min_of_nothing():
    """ReduceMin over an empty axis: the type's largest value, as onnxruntime
    (and the spec from opset 18)."""
    check("ReduceMin", [("x", np.zeros((2, 0, 3), F)), ("a", np.array([1], I64))], {}, 18,
          fold=False)


def test_chain_matches_onnxruntime():
    """A Silero-like magnitude chain (Pad, Pow, Add, Sqrt, Clip, Log) in one graph."""
    x = R.standard_normal((1, 1, 40)).astype(F)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"),
        helper.make_node("Pow", ["p", "two"], ["sq"], name="pow"),
        helper.make_node("Add", ["sq", "sq"], ["s2"], name="add"),
        helper.make_node("Sqrt", ["s2"], ["mag"], name="sqrt"),
        helper.make_node("Clip", ["mag", "lo"], ["c"], name="clip"),
        helper.make_node("Log", ["c"], ["y"], name="log"),
    ]
    inits = [numpy_helper.from_array(_pads(0, 0, 3, 0, 0, 3), "pads"),
             numpy_helper.from_array(np.array(2.0, F), "two"),
             numpy_helper.from_array(np.array(1e-6, F), "lo")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 1, 40])],
                          [onnx.ValueInfoProto(name="y")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    exp = run_ort(m, {"x": x})
    got = fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    _compare(got, exp, 1e-5, 1e-6)


@pytest.mark.parametrize("op,inputs,attrs,opset", [
    ("Pad", [("x", X4), ("p", _pads(0, 0, 0, 10 ** 12, 0, 0, 0, 0))], {}, 13),
    ("Tile", [("x", X4), ("r", np.array([1, 1, 1, 10 ** 12], I64))], {}, 13),
    ("Resize", [("x", X4), ("", None), ("s", np.array([1, 1, 1e9, 1e9], F))], {}, 13),
    ("Resize", [("x", X4), ("", None), ("s", np.array([1, 1, INF, 1], F))], {}, 13),
    ("Resize", [("x", X4), ("", None), ("", None), ("z", np.array([1, 2, 10 ** 12, 3], I64))],
     {"mode": "linear"}, 13),
], ids=["pad", "tile", "resize-scales", "resize-inf", "resize-sizes"])
def test_absurd_output_sizes_are_invalid_input(op, inputs, attrs, opset):
    """A shape input gone wrong is InvalidInput naming the node, not a MemoryError."""
    m = _model(op, inputs, attrs, opset, consts=[n for n, _ in inputs[1:] if n])
    with pytest.raises(InvalidInput, match="the_node"):
        fastlstm.InferenceSession(m.SerializeToString()).run(None, {"x": X4})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_elementwise_chain_with_special_values():
    """A chain of the float elementwise ops (which the executor may fuse into one
    compiled loop) on NaN, infinities, zeros and extremes, run until specialised."""
    chain = [("Abs", {}), ("Sqrt", {}), ("Log", {}), ("Neg", {}), ("Exp", {}),
             ("Reciprocal", {}), ("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.5}),
             ("Softplus", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.1}),
             ("HardSwish", {}), ("Erf", {}), ("Relu", {}), ("Sigmoid", {}), ("Tanh", {})]
    for start in range(0, len(chain), 3):
        names = ["x"] + [f"t{k}" for k in range(len(chain) - start)]
        nodes = [helper.make_node(op, [names[k]], [names[k + 1]], name=f"n{k}", **attrs)
                 for k, (op, attrs) in enumerate(chain[start:])]
        nodes.append(helper.make_node("Pow", [names[-1], "e"], ["y"], name="pow"))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [28])],
                              [onnx.ValueInfoProto(name="y")],
                              [numpy_helper.from_array(np.array(1.5, F), "e")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        exp = run_ort(m, {"x": SPECIAL})
        sess = fastlstm.InferenceSession(m.SerializeToString())
        for _ in range(3):
            _compare(sess.run(None, {"x": SPECIAL}), exp, 1e-5, 1e-6)
