"""ONNX export and import: round trips, foreign exporters, errors, new layers."""

import verinet as vn  # noqa: I001 - verinet before keras

import dataclasses
import importlib
import os
import sys
import warnings

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verinet import layers as L
from verinet.deploy import deploy
from verinet.errors import OnnxExportError, OnnxImportError
from verinet.layers import registry
from verinet.onnx import (
    certify_onnx,
    emitters,
    export_onnx,
    from_onnx,
    read_metadata,
    weights_sha256,
)

METHODS = ("ibp", "crown", "crown-ibp")


def _run_ort(path, x):
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, c).astype("float32"),
                    rng.normal(size=c).astype("float32"),
                    rng.normal(size=c).astype("float32"),
                    rng.uniform(0.2, 3.0, c).astype("float32"),
                ]
            )
    return model


def _zoo_model(rng, batch_norm=True):
    """Every exportable zoo layer in one image model."""
    bn = [L.BatchNormalization()] if batch_norm else []
    model = vn.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Rescaling(2.0, offset=-1.0),
            L.ZeroPadding2D(((0, 1), (2, 0))),  # on NHWC data
            L.Conv2D(4, 3, padding="same"),
            *bn,
            L.ReLU(),
            L.Dropout(0.2),
            L.ResidualBlock(4),
            L.AveragePooling2D(2, padding="same"),
            L.ZeroPadding2D(((1, 0), (0, 1))),
            L.Conv2D(3, 3, strides=2, padding="same"),
            L.LeakyReLU(0.1),
            L.MaxPooling2D(2, padding="same"),
            L.Permute((3, 1, 2)),
            L.Flatten(),
            L.Dense(12),
            *([L.BatchNormalization()] if batch_norm else []),
            L.GeLU(),
            L.Reshape((3, 4)),
            L.Dense(4),
            L.Sigmoid(),
            L.Flatten(),
            L.Dense(6),
            L.Tanh(),
            L.ElementwiseAffine(),
            L.Dense(10),
        ]
    )
    if batch_norm:
        _randomize_bn(model, rng)
    affine = model.layers[-2]
    affine.set_weights([rng.normal(size=6), rng.normal(size=6)])
    return model


@pytest.fixture(scope="module")
def zoo_export(tmp_path_factory):
    rng = np.random.default_rng(0)
    model = _zoo_model(rng)
    path = tmp_path_factory.mktemp("onnx") / "zoo.onnx"
    meta = export_onnx(model, path)
    x = rng.uniform(size=(12, 8, 8, 1)).astype("float32")
    return model, path, meta, x


def test_export_matches_keras_and_records_metadata(zoo_export):
    model, path, meta, x = zoo_export
    np.testing.assert_allclose(_run_ort(path, x), _predict(model, x), atol=1e-4)
    proto = onnx.load(path)
    assert {n.op_type for n in proto.graph.node} >= {"Conv", "Gemm", "Erf", "Pad"}
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    stored = {p.key: p.value for p in proto.metadata_props}
    assert stored == meta
    assert stored["verinet.version"] == vn.__version__
    assert stored["verinet.input_shape"] == "[8, 8, 1]"
    assert stored["verinet.input_layout"] == "NHWC"
    assert stored["verinet.weights_sha256"] == weights_sha256(proto)
    assert read_metadata(path)["weights_sha256_ok"]
    # No temporary file is left next to the output.
    assert os.listdir(path.parent) == ["zoo.onnx"]


def test_roundtrip_bounds_equal_deployed_model(zoo_export):
    model, path, _, x = zoo_export
    imported = from_onnx(path)
    np.testing.assert_allclose(_predict(imported, x), _run_ort(path, x), atol=1e-5)
    deployed = deploy(model)
    for method in METHODS:
        lo0, up0 = vn.compute_bounds(deployed, x[:4], 0.03, method=method)
        lo1, up1 = vn.compute_bounds(imported, x[:4], 0.03, method=method)
        np.testing.assert_allclose(lo1, lo0, atol=1e-5, rtol=0)
        np.testing.assert_allclose(up1, up0, atol=1e-5, rtol=0)


def test_roundtrip_bounds_equal_original_without_batch_norm(rng, tmp_path):
    model = _zoo_model(rng, batch_norm=False)
    path = tmp_path / "plain.onnx"
    export_onnx(model, path, opset=20)  # the Gelu operator this time
    assert "Gelu" in {n.op_type for n in onnx.load(path).graph.node}
    imported = from_onnx(path)
    x = rng.uniform(size=(4, 8, 8, 1)).astype("float32")
    for method in METHODS:
        lo0, up0 = vn.compute_bounds(model, x, 0.03, method=method)
        lo1, up1 = vn.compute_bounds(imported, x, 0.03, method=method)
        np.testing.assert_allclose(lo1, lo0, atol=1e-5, rtol=0)
        np.testing.assert_allclose(up1, up0, atol=1e-5, rtol=0)


def test_export_records_the_certificate(rng, tmp_path):
    model = vn.Sequential([L.Input((4,)), L.Dense(8), L.ReLU(), L.Dense(3)])
    x = rng.uniform(size=(10, 4)).astype("float32")
    y = _predict(model, x).argmax(axis=1)
    report = vn.certify(model, x, y, 0.01, input_range=(0.0, 1.0), verbose=0)
    report.save(tmp_path / "report.json")
    meta = export_onnx(model, tmp_path / "m.onnx", report=report)
    stored = read_metadata(tmp_path / "m.onnx")
    assert float(stored["verinet.epsilon"]) == 0.01
    assert stored["verinet.norm"] == "linf"
    assert stored["verinet.method"] == "crown"
    assert stored["verinet.input_range"] == "[0.0, 1.0]"
    assert float(stored["verinet.verified_accuracy"]) == report.verified_accuracy
    import json

    saved = json.loads((tmp_path / "report.json").read_text())
    assert stored["verinet.report_sha256"] == saved["report_sha256"]
    assert stored["verinet.report_weights"] == "model"
    assert meta["verinet.weights_sha256"] == stored["verinet.weights_sha256"]
    # Changing a weight breaks the match between file and certificate.
    proto = onnx.load(tmp_path / "m.onnx")
    tensor = proto.graph.initializer[0]
    array = numpy_helper.to_array(tensor).copy()
    array.flat[0] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(proto, tmp_path / "tampered.onnx")
    assert not read_metadata(tmp_path / "tampered.onnx")["weights_sha256_ok"]


def test_export_refuses_when_onnxruntime_disagrees(rng, tmp_path, monkeypatch):
    """A wrong export rule (ReLU written as Sigmoid) is caught, nothing written."""
    wrong = dataclasses.replace(
        registry.spec_for(L.ReLU), onnx_export=emitters.activation("Sigmoid")
    )
    monkeypatch.setitem(registry._SPECS, L.ReLU, wrong)
    model = vn.Sequential([L.Input((4,)), L.Dense(8), L.ReLU(), L.Dense(3)])
    with pytest.raises(OnnxExportError, match="differ"):
        export_onnx(model, tmp_path / "bad.onnx")
    assert os.listdir(tmp_path) == []


def test_keras_own_onnx_export_still_works_and_imports(rng, tmp_path):
    model = vn.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(3, 3, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.AveragePooling2D(2),
            L.Flatten(),
            L.Dense(8),
            L.GeLU(),
            L.Dense(10),
        ]
    )
    _randomize_bn(model, rng)
    x = rng.uniform(size=(6, 8, 8, 1)).astype("float32")
    model(x[:1])  # Keras's exporter needs a model that has been called
    path = tmp_path / "keras.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(path, format="onnx", verbose=False)
    expected = _run_ort(path, x)
    np.testing.assert_allclose(expected, _predict(model, x), atol=1e-4)
    imported = from_onnx(path)
    np.testing.assert_allclose(_predict(imported, x), expected, atol=1e-5)


class _TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(10, 16)
        self.bn = torch.nn.BatchNorm1d(16)  # folds into fc1 on import
        self.fc2 = torch.nn.Linear(16, 12)
        self.fc3 = torch.nn.Linear(12, 8)
        self.fc4 = torch.nn.Linear(8, 4)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        x = torch.relu(self.bn(self.fc1((x - 0.5) / 0.25)))
        x = torch.nn.functional.leaky_relu(self.drop(self.fc2(x)), 0.2)
        x = torch.tanh(self.fc3(x))
        return self.fc4(torch.sigmoid(x) * 2.0)


class _TorchCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 5, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(5)  # folds into conv2 on import
        self.pool = torch.nn.AvgPool2d(2)
        self.fc1 = torch.nn.Linear(5 * 2 * 2, 12)
        self.fc2 = torch.nn.Linear(12, 3)

    def forward(self, x):
        x = self.bn(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = x.view(x.size(0), -1)
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def _torch_export(net, example, path, opset):
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            example,
            os.fspath(path),
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )


@pytest.mark.parametrize("opset", [17, 20])
def test_torch_mlp_and_cnn_import_match_onnxruntime(rng, tmp_path, opset):
    torch.manual_seed(0)
    nets = [(_TorchMLP(), (10,)), (_TorchCNN(), (2, 8, 8))]
    for k, (net, shape) in enumerate(nets):
        for bn in (m for m in net.modules() if "BatchNorm" in type(m).__name__):
            with torch.no_grad():
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 2)
                bn.bias.uniform_(-1, 1)
        path = tmp_path / f"net{k}.onnx"
        _torch_export(net, torch.zeros(1, *shape), path, opset)
        ops = {n.op_type for n in onnx.load(path).graph.node}
        if shape == (2, 8, 8):
            assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)
        x = rng.uniform(size=(8, *shape)).astype("float32")
        imported = from_onnx(path, check=False)  # compared below instead
        assert tuple(imported.inputs[0].shape[1:]) == shape  # NCHW kept
        expected = _run_ort(path, x)
        np.testing.assert_allclose(_predict(imported, x), expected, atol=1e-5)
        with torch.no_grad():
            np.testing.assert_allclose(expected, net(torch.as_tensor(x)), atol=1e-5)
        _assert_sound(imported, x[:2], 0.05, rng)
    # The imported NCHW model exports back to an NCHW file.
    again = tmp_path / "again.onnx"
    assert export_onnx(imported, again)["verinet.input_layout"] == "NCHW"
    ops = [n.op_type for n in onnx.load(again).graph.node]
    assert "Transpose" not in ops  # layout changes cost no nodes
    np.testing.assert_allclose(_run_ort(again, x), expected, atol=1e-5)


def _assert_sound(model, x, epsilon, rng, n=200):
    """Sampled points of the L∞ ball (corners included) lie within bounds."""
    signs = rng.choice([-1.0, 1.0], size=(n // 2, *x.shape))
    uniform = rng.uniform(-1.0, 1.0, size=(n // 2, *x.shape))
    points = (x[None] + epsilon * np.concatenate([signs, uniform])).astype("float32")
    outs = _predict(model, points.reshape(-1, *x.shape[1:]))
    outs = outs.reshape(n, len(x), -1)
    for method in METHODS:
        lower, upper = vn.compute_bounds(model, x, epsilon, method=method)
        lower, upper = lower.reshape(len(x), -1), upper.reshape(len(x), -1)
        assert np.all(outs >= lower[None] - 1e-5), method
        assert np.all(outs <= upper[None] + 1e-5), method


_NEW_LAYERS = {
    "ElementwiseAffine": lambda: L.ElementwiseAffine((1, 5, 3)),
    "Permute": lambda: L.Permute((3, 1, 2)),
    "ZeroPadding2D": lambda: L.ZeroPadding2D(((2, 0), (1, 3))),
}


@pytest.mark.parametrize("name", sorted(_NEW_LAYERS))
def test_new_layers_bounds_are_sound_alone_and_in_a_stack(name, rng):
    x = rng.uniform(size=(3, 4, 5, 3)).astype("float32")
    alone = vn.Sequential([L.Input((4, 5, 3)), _NEW_LAYERS[name]()])
    stack = vn.Sequential(
        [
            L.Input((4, 5, 3)),
            L.Conv2D(3, 2, padding="same"),
            L.ReLU(),
            _NEW_LAYERS[name](),
            L.ReLU(),
            L.Flatten(),
            L.Dense(4),
        ]
    )
    for model in (alone, stack):
        for layer in model.layers:
            if isinstance(layer, L.ElementwiseAffine):
                shape = layer.scale.shape
                layer.set_weights([rng.normal(size=shape), rng.normal(size=shape)])
        _assert_sound(model, x, 0.1, rng)


@pytest.mark.parametrize("name", sorted(_NEW_LAYERS))
def test_new_layers_crown_is_exact_on_linear_models(name, rng):
    """Linear model: CROWN must give the exact range f(x) ± eps·Σ|J|."""
    model = vn.Sequential(
        [L.Input((4, 5, 3)), _NEW_LAYERS[name](), L.Flatten(), L.Dense(3)]
    )
    for layer in model.layers:
        if isinstance(layer, L.ElementwiseAffine):
            shape = layer.scale.shape
            layer.set_weights([rng.normal(size=shape), rng.normal(size=shape)])
    x = rng.uniform(size=(2, 4, 5, 3)).astype("float32")
    xt = torch.tensor(x)
    jac = torch.autograd.functional.jacobian(
        lambda t: model(t, training=False).sum(0), xt
    )  # (3, batch, 4, 5, 3)
    spread = jac.abs().sum(dim=(2, 3, 4)).T.numpy()  # (batch, 3)
    centre = _predict(model, x)
    lower, upper = vn.compute_bounds(model, x, 0.1, method="crown")
    np.testing.assert_allclose(lower, centre - 0.1 * spread, atol=1e-4)
    np.testing.assert_allclose(upper, centre + 0.1 * spread, atol=1e-4)


def _graph_model(nodes, inits, in_shape, out_shape, opset=17, name="g"):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8
    )


def test_hand_written_graph_of_many_ops(rng, tmp_path):
    """NCHW graph: BatchNormalization, Pad, MaxPool, Transpose, Sub/Div, c - x,
    Reshape, MatMul + Add, GlobalAveragePool, Identity, Dropout, Flatten."""
    f = np.float32
    inits = {
        "mean": rng.normal(size=(1, 2, 1, 1)).astype(f),
        "std": rng.uniform(0.5, 2, (1, 2, 1, 1)).astype(f),
        "bn_s": rng.uniform(0.5, 2, 2).astype(f),
        "bn_b": rng.normal(size=2).astype(f),
        "bn_m": rng.normal(size=2).astype(f),
        "bn_v": rng.uniform(0.5, 2, 2).astype(f),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "w": (0.3 * rng.normal(size=(3, 2, 3, 3))).astype(f),
        "shape": np.array([0, -1], np.int64),
        "k": (0.1 * rng.normal(size=(72, 5))).astype(f),
        "b": rng.normal(size=5).astype(f),
        "c": np.float32(0.75),
    }
    n = helper.make_node
    nodes = [
        n("Sub", ["x", "mean"], ["a"], name="sub"),
        n("Div", ["a", "std"], ["b1"], name="div"),
        n("BatchNormalization", ["b1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        n("Pad", ["bn", "pads"], ["p"], name="pad"),
        n("Conv", ["p", "w"], ["c1"], name="conv", strides=[2, 1]),
        n("MaxPool", ["c1"], ["m1"], kernel_shape=[1, 2], strides=[1, 1]),
        n("Identity", ["m1"], ["i1"]),
        n("Dropout", ["i1"], ["d1"]),
        n("Sub", ["c", "d1"], ["neg"], name="c_minus_x"),
        n("Transpose", ["neg"], ["t"], perm=[0, 2, 3, 1]),
        n("Reshape", ["t", "shape"], ["r"]),
        n("MatMul", ["r", "k"], ["mm"]),
        n("Add", ["mm", "b"], ["y"]),
    ]
    proto = _graph_model(nodes, inits, (2, 8, 7), (5,))
    path = tmp_path / "many.onnx"
    onnx.save(proto, path)
    x = rng.normal(size=(6, 2, 8, 7)).astype("float32")
    imported = from_onnx(path)
    expected = _run_ort(path, x)
    assert 1.0 < np.abs(expected).max() < 50.0
    np.testing.assert_allclose(_predict(imported, x), expected, atol=1e-5)
    _assert_sound(imported, x[:2], 0.05, rng)

    pool = [
        n("GlobalAveragePool", ["x"], ["g"]),
        n("Flatten", ["g"], ["y"]),
    ]
    onnx.save(_graph_model(pool, {}, (2, 8, 7), (2,)), tmp_path / "gap.onnx")
    imported = from_onnx(tmp_path / "gap.onnx")
    np.testing.assert_allclose(
        _predict(imported, x), _run_ort(tmp_path / "gap.onnx", x), atol=1e-5
    )


def test_affine_maps_fold_only_where_nothing_else_reads(rng, tmp_path):
    """Constant maps are folded into the Gemm before them only when nothing
    else reads the Gemm's output or any value on the way."""
    f = np.float32
    inits = {
        "w": rng.normal(size=(4, 3)).astype(f),
        "b": rng.normal(size=3).astype(f),
        "two": np.full(3, 2.0, f),
        "half": np.float32(0.5),
        "w2": rng.normal(size=(3, 3)).astype(f),
        "b2": rng.normal(size=3).astype(f),
    }
    n = helper.make_node
    nodes = [
        n("Gemm", ["x", "w", "b"], ["h"]),
        n("Mul", ["h", "two"], ["a"]),
        n("Relu", ["h"], ["r"]),
        n("Tanh", ["a"], ["ta"]),
        n("Add", ["ta", "r"], ["s"]),
        n("Gemm", ["s", "w2", "b2"], ["g"]),
        n("Mul", ["g", "half"], ["m"]),
        n("Relu", ["m"], ["q"]),
        n("Sub", ["m", "q"], ["d"]),
        n("Gemm", ["d", "w2", "b2"], ["e"]),
        n("Mul", ["e", "two"], ["e2"]),
        n("Add", ["e2", "b2"], ["y"]),
    ]
    path = tmp_path / "branches.onnx"
    onnx.save(_graph_model(nodes, inits, (4,), (3,)), path)
    imported = from_onnx(path, check=False)
    x = rng.normal(size=(16, 4)).astype("float32")
    np.testing.assert_allclose(_predict(imported, x), _run_ort(path, x), atol=1e-5)
    kinds = [type(layer).__name__ for layer in imported.layers]
    # 2*h (h also feeds a ReLU), 0.5*g (read by ReLU and Sub), -q for the Sub;
    # 2*e + b2 folds into the last Gemm.
    assert kinds.count("ElementwiseAffine") == 3
    assert kinds[-1] == "Dense"


_GELU_ORDERS = {
    # (x * (1 + erf(x / sqrt2))) * 0.5, as PyTorch writes it
    "half_last": [
        ("Div", ["x", "sqrt2"], "s"),
        ("Erf", ["s"], "e"),
        ("Add", ["e", "one"], "p"),
        ("Mul", ["x", "p"], "m"),
        ("Mul", ["m", "half"], "y"),
    ],
    # (x * 0.5) * (1 + erf(x * (1 / sqrt2)))
    "half_first": [
        ("Mul", ["x", "half"], "h"),
        ("Mul", ["x", "inv_sqrt2"], "s"),
        ("Erf", ["s"], "e"),
        ("Add", ["one", "e"], "p"),
        ("Mul", ["h", "p"], "y"),
    ],
    # x * (0.5 * (1 + erf(x / sqrt2)))
    "half_inside": [
        ("Div", ["x", "sqrt2"], "s"),
        ("Erf", ["s"], "e"),
        ("Add", ["e", "one"], "p"),
        ("Mul", ["p", "half"], "q"),
        ("Mul", ["q", "x"], "y"),
    ],
}


@pytest.mark.parametrize("order", sorted(_GELU_ORDERS))
def test_erf_gelu_patterns_become_one_gelu_layer(order, rng, tmp_path):
    inits = {
        "sqrt2": np.float32(np.sqrt(2.0)),
        "inv_sqrt2": np.float32(1 / np.sqrt(2.0)),
        "one": np.float32(1.0),
        "half": np.float32(0.5),
        "w": rng.normal(size=(3, 5)).astype("float32"),
    }
    nodes = [helper.make_node("MatMul", ["in", "w"], ["x"])]
    nodes += [helper.make_node(op, i, [o]) for op, i, o in _GELU_ORDERS[order]]
    proto = _graph_model(nodes, inits, (3,), (5,))
    proto.graph.input[0].name = "in"
    path = tmp_path / "gelu.onnx"
    onnx.save(proto, path)
    imported = from_onnx(path)
    assert [type(layer).__name__ for layer in imported.layers] == [
        "InputLayer",
        "Dense",
        "GeLU",
    ]
    x = rng.normal(size=(32, 3)).astype("float32") * 3
    np.testing.assert_allclose(_predict(imported, x), _run_ort(path, x), atol=1e-5)


def test_unsupported_op_names_node_type_and_supported_list(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node("Softmax", ["r"], ["y"], name="probabilities"),
    ]
    onnx.save(_graph_model(nodes, {}, (4,), (4,)), tmp_path / "softmax.onnx")
    with pytest.raises(OnnxImportError) as info:
        from_onnx(tmp_path / "softmax.onnx")
    message = str(info.value)
    assert "'probabilities'" in message and "'Softmax'" in message
    assert "Supported op types" in message and "Gemm" in message and "Conv" in message


def test_lone_erf_and_data_times_data_are_refused(tmp_path):
    for op, inputs in (("Erf", ["x"]), ("Mul", ["x", "x"])):
        node = helper.make_node(op, inputs, ["y"], name="bad")
        onnx.save(_graph_model([node], {}, (3,), (3,)), tmp_path / "bad.onnx")
        with pytest.raises(OnnxImportError, match=f"'{op}'"):
            from_onnx(tmp_path / "bad.onnx")


def test_corrupt_truncated_and_missing_files_raise_clear_errors(zoo_export, tmp_path):
    _, path, _, _ = zoo_export
    data = path.read_bytes()
    cases = {
        "garbage.onnx": b"\x08\x07this is not a protobuf \xff\xfe" * 20,
        "truncated.onnx": data[: len(data) // 2],
        "cut_short.onnx": data[:40],
        "empty.onnx": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(OnnxImportError, match="ONNX") as info:
            from_onnx(tmp_path / name)
        assert name in str(info.value) or "empty graph" in str(info.value)
    with pytest.raises(OnnxImportError, match="No ONNX file"):
        from_onnx(tmp_path / "missing.onnx")


def test_certify_onnx_agrees_with_certify_of_the_exported_keras_model(zoo_export):
    """The ONNX file's certificate equals that of the Keras model it came
    from (batch norm and dropout included): an independent reference."""
    model, path, _, x = zoo_export
    x = x[:5]
    y = _predict(model, x).argmax(axis=1)
    options = dict(input_range=(0.0, 1.0), attack=None, verbose=0)
    report = certify_onnx(path, x, y, 0.01, **options)
    reference = vn.certify(model, x, y, 0.01, **options)
    np.testing.assert_array_equal(report.verified, reference.verified)
    np.testing.assert_array_equal(report.falsified, reference.falsified)
    np.testing.assert_array_equal(report.predictions, reference.predictions)
    # Equal up to float rounding: the file holds the folded weights.
    finite = np.isfinite(reference.margin_lower)
    np.testing.assert_array_equal(np.isfinite(report.margin_lower), finite)
    np.testing.assert_allclose(
        report.margin_lower[finite],
        reference.margin_lower[finite],
        rtol=1e-4,
        atol=1e-4,
    )
    assert finite.sum() == len(x) * 9  # every margin but the label's compared
    assert report.clean_accuracy == 1.0 and report.attack is None


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("onnx_export", "export_onnx", "verinet.onnx.export"),
        ("onnx_import", "from_onnx", "verinet.onnx.importer"),
        ("onnx_ops", "HANDLERS", "verinet.onnx.handlers"),
        ("onnx_metadata", "read_metadata", "verinet.onnx.metadata"),
        ("onnx_values", "Sym", "verinet.onnx.values"),
        ("parity", "output_gap", "verinet.onnx.parity"),
        ("gelu_pattern", "fuse_gelu", "verinet.onnx.gelu_pattern"),
    ],
)
def test_old_deploy_module_paths_warn_and_give_the_same_objects(
    old, name, new, monkeypatch
):
    """``verinet.deploy.onnx_*`` still import, with a DeprecationWarning naming
    the module that replaced them, and hand out the very same objects."""
    path = f"verinet.deploy.{old}"
    monkeypatch.delitem(sys.modules, path, raising=False)  # so the warning fires
    with pytest.warns(DeprecationWarning, match=new):
        module = importlib.import_module(path)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
