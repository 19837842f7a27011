"""A certificate must not lie: reports carry the hash of the weights they were
computed on, exports refuse other weights' reports, changed ONNX weights are
reported, counterexamples lie exactly inside the perturbation set, and
exported files are written with the usual permissions."""

import verinet as vn  # noqa: I001 - verinet before keras

import errno
import json
import os
import stat
import warnings

import keras
import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper

from verinet import layers as L
from verinet.cli import main
from verinet.onnx import certify_onnx, export_onnx, from_onnx, read_metadata

# Only names verinet 0.1 had are imported at module level, so that each test
# can be run against the old code and seen to fail for its own reason.


def _hash(model):
    from verinet.certify.integrity import model_weights_sha256

    return model_weights_sha256(model)


def _mlp(rng, inputs=(4,), hidden=8, classes=3, batch_norm=False):
    model = vn.Sequential(
        [
            L.Input(inputs),
            L.Flatten(),
            L.Dense(hidden),
            *([L.BatchNormalization()] if batch_norm else []),
            L.ReLU(),
            L.Dense(classes),
        ]
    )
    if batch_norm:
        bn = model.layers[2]
        bn.set_weights(
            [
                rng.uniform(0.5, 2.0, hidden).astype("float32"),
                rng.normal(size=hidden).astype("float32"),
                rng.normal(size=hidden).astype("float32"),
                rng.uniform(0.2, 3.0, hidden).astype("float32"),
            ]
        )
    return model


def _labelled(model, rng, n=10, shape=(4,)):
    x = rng.uniform(size=(n, *shape)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)
    return x, y


OPTIONS = dict(input_range=(0.0, 1.0), verbose=0)


# --- reports record their weights; export checks them -------------------------------


def test_report_records_the_weights_and_threat_model_it_was_computed_on(rng):
    model = _mlp(rng)
    x, y = _labelled(model, rng)
    report = vn.certify(model, x, y, 0.01, **OPTIONS)
    assert report.weights_sha256 == _hash(model)
    assert (report.dtype, report.attack, report.method) == ("float32", "pgd", "crown")
    wide = vn.certify(model, x, y, 0.01, dtype="float64", attack=None, **OPTIONS)
    assert (wide.dtype, wide.attack) == ("float64", None)
    # Same weights under other layer names hash the same; one ulp differs.
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    assert _hash(twin) == report.weights_sha256
    weights = model.get_weights()
    weights[0].flat[3] = np.nextafter(weights[0].flat[3], np.float32(np.inf))
    twin.set_weights(weights)
    assert _hash(twin) != report.weights_sha256


def test_export_refuses_the_report_of_another_model(rng, tmp_path):
    model_a, model_b = _mlp(rng), _mlp(rng)
    x, y = _labelled(model_a, rng)
    report = model_a.certify(x, y, 0.01, **OPTIONS)
    with pytest.raises(vn.InvalidInputError) as info:
        export_onnx(model_b, tmp_path / "b.onnx", report=report)
    message = str(info.value)
    assert report.weights_sha256[:12] in message
    assert _hash(model_b)[:12] in message
    assert not (tmp_path / "b.onnx").exists()
    # The same report goes with its own model (and after a save / load).
    report.save(tmp_path / "a.json")
    loaded = vn.CertificationReport.load(tmp_path / "a.json")
    meta = export_onnx(model_a, tmp_path / "a.onnx", report=loaded)
    assert meta["verinet.report_weights"] == "model"
    assert meta["verinet.report_sha256"] == report.content_sha256()


def test_export_accepts_reports_of_the_deployed_form_and_of_its_onnx_file(
    rng, tmp_path
):
    model = _mlp(rng, batch_norm=True)
    x, y = _labelled(model, rng)
    deployed = vn.deploy(model)
    assert _hash(deployed) != _hash(model)  # batch norm folded
    on_deployed = vn.certify(deployed, x, y, 0.01, **OPTIONS)
    meta = export_onnx(model, tmp_path / "m.onnx", report=on_deployed)
    assert meta["verinet.report_weights"] == "deployed"

    # certify_onnx and certify(from_onnx(...)) reports go with the model the
    # file was exported from...
    on_file = certify_onnx(tmp_path / "m.onnx", x, y, 0.01, **OPTIONS)
    assert on_file.onnx_weights_sha256 == meta["verinet.weights_sha256"]
    again = export_onnx(model, tmp_path / "again.onnx", report=on_file)
    assert again["verinet.report_weights"] == "onnx"
    imported = from_onnx(tmp_path / "m.onnx")
    on_import = vn.certify(imported, x, y, 0.01, **OPTIONS)
    assert export_onnx(model, tmp_path / "3.onnx", report=on_import)[
        "verinet.report_weights"
    ] == ("onnx")
    # ...and with the imported model itself, but not with another model,
    with pytest.raises(vn.InvalidInputError, match="computed on weights"):
        export_onnx(_mlp(rng, batch_norm=True), tmp_path / "x.onnx", report=on_file)
    # nor once the imported model's weights were changed before certifying.
    weights = imported.get_weights()
    weights[0] = weights[0] * 1.5
    imported.set_weights(weights)
    changed = vn.certify(imported, x, y, 0.01, **OPTIONS)
    assert changed.onnx_weights_sha256 is None
    with pytest.raises(vn.InvalidInputError, match="computed on weights"):
        export_onnx(model, tmp_path / "x.onnx", report=changed)
    assert not (tmp_path / "x.onnx").exists()


def test_a_report_without_weights_hash_needs_explicit_consent(rng, tmp_path):
    model = _mlp(rng)
    x, y = _labelled(model, rng)
    data = model.certify(x, y, 0.01, attack=None, **OPTIONS).to_dict()
    # A verinet 0.1 file: one JSON, no hashes, no dtype, no inputs.
    keys = ("verified", "falsified", "unknown", "margin_lower", "labels")
    keys += ("predictions", "adversarial_examples", "epsilon", "method", "norm")
    keys += ("input_range", "attack", "seconds", "extra")
    old = {key: data[key] for key in keys}
    old["format"] = "verinet.CertificationReport/1"
    (tmp_path / "old.json").write_text(json.dumps(old))
    report = vn.CertificationReport.load(tmp_path / "old.json")
    with pytest.raises(vn.InvalidInputError, match="allow_unhashed_report"):
        export_onnx(model, tmp_path / "m.onnx", report=report)
    assert not (tmp_path / "m.onnx").exists()
    meta = export_onnx(
        model, tmp_path / "m.onnx", report=report, allow_unhashed_report=True
    )
    assert meta["verinet.report_weights"] == "unchecked"


def test_export_refuses_an_inconsistent_report(rng, tmp_path):
    model = _mlp(rng)
    x, y = _labelled(model, rng)
    report = model.certify(x, y, 0.01, **OPTIONS)
    report.epsilon = -0.01
    with pytest.raises(vn.InvalidInputError, match="epsilon"):
        export_onnx(model, tmp_path / "m.onnx", report=report)


# --- changed ONNX weights are reported --------------------------------------------


def _tamper(source, target):
    proto = onnx.load(source)
    tensor = proto.graph.initializer[0]
    array = numpy_helper.to_array(tensor).copy()
    array.flat[0] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(proto, target)


def _property(path, n_in, n_out):
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(n_in):
        lines += [f"(assert (>= X_{i} 0.5))", f"(assert (<= X_{i} 0.51))"]
    lines.append("(assert (>= Y_1 Y_0))")
    path.write_text("\n".join(lines) + "\n")
    return path


def _mismatches(caught):
    return [w for w in caught if issubclass(w.category, vn.CertificateMismatchWarning)]


def test_changed_onnx_weights_are_reported_on_every_path(rng, tmp_path, capsys):
    model = _mlp(rng, inputs=(8, 8, 1), hidden=16, classes=10)
    x, y = _labelled(model, rng, n=8, shape=(8, 8, 1))
    report = model.certify(x, y, 0.01, **OPTIONS)
    export_onnx(model, tmp_path / "good.onnx", report=report)
    bad = tmp_path / "tampered.onnx"
    _tamper(tmp_path / "good.onnx", bad)
    prop = _property(tmp_path / "prop.vnnlib", 64, 10)

    with pytest.warns(vn.CertificateMismatchWarning) as caught:
        from_onnx(bad)
    (warning,) = _mismatches(caught)
    text = str(warning.message)
    assert repr(str(bad)) in text
    assert "certificate figures" in text and "do not describe these weights" in text
    assert warning.filename == __file__  # points at the caller's line

    with pytest.warns(vn.CertificateMismatchWarning):
        on_file = certify_onnx(bad, x, y, 0.01, **OPTIONS)
    assert "tampered.onnx" in on_file.extra["certificate_mismatch"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vn.verify(bad, prop, timeout=5)
    assert len(_mismatches(caught)) == 1

    args = ["certify", str(bad), "--data", "digits", "--epsilon", "0.01"]
    args += ["--limit", "8", "-o", str(tmp_path / "r.json"), "--quiet"]
    with pytest.warns(vn.CertificateMismatchWarning, match="tampered.onnx"):
        assert main(args) == 0
    saved = vn.CertificationReport.load(tmp_path / "r.json")
    assert "tampered.onnx" in saved.extra["certificate_mismatch"]

    # read_metadata reports the mismatch as data, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", vn.CertificateMismatchWarning)
        assert not read_metadata(bad)["weights_sha256_ok"]


def test_untouched_and_foreign_onnx_files_load_silently(rng, tmp_path):
    model = _mlp(rng)
    x, y = _labelled(model, rng)
    export_onnx(model, tmp_path / "good.onnx")
    # A file from another exporter: no verinet metadata at all.
    weights = {"w": rng.normal(size=(4, 3)).astype("float32")}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")],
        "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    foreign = tmp_path / "foreign.onnx"
    opset = [onnx.helper.make_opsetid("", 17)]
    # The oldest IR version for the opset: onnx's default (its newest) may be
    # newer than the installed onnxruntime reads.
    ir_version = onnx.helper.find_min_ir_version_for(opset)
    model = onnx.helper.make_model(graph, opset_imports=opset, ir_version=ir_version)
    onnx.save(model, foreign)
    prop = _property(tmp_path / "prop.vnnlib", 4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", vn.CertificateMismatchWarning)
        for path in (tmp_path / "good.onnx", foreign):
            report = certify_onnx(path, x, y, 0.01, **OPTIONS)
            assert "certificate_mismatch" not in report.extra
            vn.verify(path, prop, timeout=5)


# --- counterexamples lie exactly inside the set -------------------------------------


def _exactly_inside(adv, x, eps, norm, input_range):
    """The float64 values of the float32 points, compared without tolerance."""
    size = int(np.prod(x.shape[1:]))
    d = (adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), size)
    if norm == "linf":
        ok = np.abs(d).max(axis=1) <= eps
    else:
        ok = np.sqrt(np.sum(d * d, axis=1)) <= eps
    if input_range is not None:
        flat = adv.reshape(len(x), size).astype(np.float64)
        ok &= (flat.min(axis=1) >= input_range[0]) & (
            flat.max(axis=1) <= input_range[1]
        )
    return ok


def test_every_counterexample_lies_exactly_in_the_set():
    rng = np.random.default_rng(7)
    model = vn.Sequential(
        [L.Input((16,)), L.Dense(32), L.ReLU(), L.Dense(5)], name="sensitive"
    )
    kernel, _, head, head_bias = model.get_weights()
    kernel = kernel * 40  # easy to flip, centred on the middle of [0, 1]
    model.set_weights([kernel, -0.5 * kernel.sum(axis=0), head * 40, head_bias])
    attacked = 0
    for eps in (0.1, 1 / 255, 0.3):
        for norm in ("linf", "l2"):
            for box in ((0.0, 1.0), None):
                x = rng.uniform(size=(64, 16)).astype("float32")
                y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)
                report = vn.certify(
                    model,
                    x,
                    y,
                    eps,
                    method="ibp",
                    norm=norm,
                    input_range=box,
                    verbose=0,
                )
                index, adv = report.counterexamples()
                assert adv.dtype == np.float32
                assert np.all(_exactly_inside(adv, x[index], eps, norm, box)), (
                    eps,
                    norm,
                    box,
                )
                pred = keras.ops.convert_to_numpy(model(adv)).argmax(axis=1)
                assert np.all(pred != y[index])
                attacked += len(index)
    assert attacked > 100  # the check above is not vacuous


@given(
    seed=st.integers(0, 2**32 - 1),
    eps=st.sampled_from([0.1, 1 / 255, 0.3, 1e-7, 0.0, 0.7]),
    norm=st.sampled_from(["linf", "l2"]),
    box=st.sampled_from([(0.0, 1.0), (0.1, 0.9), None]),
    spread=st.sampled_from([0.0, 1e-6, 0.5, 10.0]),
)
def test_projection_is_exact_for_any_candidate(seed, eps, norm, box, spread):
    from verinet.bounds.api import make_perturbation
    from verinet.certify.certify import _project

    rng = np.random.default_rng(seed)
    low, high = box or (-1.0, 2.0)
    x = rng.uniform(low, high, size=(32, 3, 5)).astype("float32")
    x[:4] = np.float32(low)  # on the edge of the input range
    perturbation = make_perturbation(eps, norm, box, x)
    # Candidates just around the ball's surface, or far outside it.
    direction = rng.choice([-1.0, 1.0], size=x.shape)
    candidate = x + direction * eps * (1 + spread * rng.uniform(size=x.shape))
    points, inside = _project(candidate.astype("float32"), x, perturbation)
    assert points.dtype == np.float32 and inside.all()
    assert np.all(_exactly_inside(points, x, eps, norm, box))


# --- file modes and write errors ----------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_exported_file_gets_the_usual_mode_and_keeps_an_existing_one(
    rng, tmp_path, umask_022
):
    model = _mlp(rng)
    export_onnx(model, tmp_path / "new.onnx")
    assert stat.S_IMODE(os.stat(tmp_path / "new.onnx").st_mode) == 0o644
    (tmp_path / "old.onnx").write_bytes(b"")
    os.chmod(tmp_path / "old.onnx", 0o640)
    export_onnx(model, tmp_path / "old.onnx")
    assert stat.S_IMODE(os.stat(tmp_path / "old.onnx").st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["new.onnx", "old.onnx"]


def test_export_write_errors_name_the_users_path(rng, tmp_path):
    model = _mlp(rng)
    target = tmp_path / "missing" / "model.onnx"
    with pytest.raises(OSError) as info:
        export_onnx(model, target)
    message = str(info.value)
    assert repr(str(target)) in message and "does not exist" in message
    assert ".tmp" not in message and "verinet-" not in message
    assert info.value.errno == errno.ENOENT
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(OSError, match="folder.onnx.*is a folder"):
        export_onnx(model, tmp_path / "folder.onnx")
    assert os.listdir(tmp_path / "folder.onnx") == []
