"""CertificationReport: consistency on load, file layout, display, writes."""

import verinet as vn  # noqa: I001 - verinet before keras

import errno
import json
import os
import stat

import numpy as np
import pytest

# Only names verinet 0.1 had are imported here, so that each test can be run
# against the old code and seen to fail for its own reason.
FORMAT, FORMAT_V1 = "verinet.CertificationReport/2", "verinet.CertificationReport/1"
N, CLASSES, SHAPE = 360, 10, (8, 8, 1)


def _report(n=N, seed=0, new_fields=True) -> vn.CertificationReport:
    """A consistent report: verified, attacked, misclassified and unknown
    samples, counterexamples exactly inside the L∞ ball and [0, 1].

    ``new_fields=False`` leaves out the fields verinet 0.1 did not have.
    """
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(0.2, 0.8, size=(n, *SHAPE)).astype(np.float32)
    labels = rng.integers(0, CLASSES, n)
    kind = np.arange(n) % 4  # 0 verified, 1 attacked, 2 misclassified, 3 unknown
    predictions = np.where(kind == 2, (labels + 1) % CLASSES, labels)
    margins = rng.uniform(0.1, 2.0, size=(n, CLASSES))
    margins[kind == 3, (labels[kind == 3] + 1) % CLASSES] = -0.5
    margins[kind == 1] = -1.0
    margins[np.arange(n), labels] = np.inf
    adversarial = np.full_like(inputs, np.nan)
    adversarial[kind == 2] = inputs[kind == 2]
    eps = np.float32(0.05)
    step = rng.choice([-eps, eps], size=inputs[kind == 1].shape).astype(np.float32)
    adversarial[kind == 1] = inputs[kind == 1] + step * np.float32(0.5)
    new = dict(dtype="float32", weights_sha256="ab" * 32, inputs=inputs)
    return vn.CertificationReport(
        **(new if new_fields else {}),
        verified=kind == 0,
        falsified=(kind == 1) | (kind == 2),
        unknown=kind == 3,
        margin_lower=margins,
        adversarial_examples=adversarial,
        labels=labels,
        predictions=predictions,
        epsilon=0.05,
        method="crown",
        norm="linf",
        input_range=(0.0, 1.0),
        attack="pgd",
        seconds=1.5,
    )


def _v1_dict(report) -> dict:
    """The single-file JSON verinet 0.1 wrote (format ``/1``)."""

    def encode(array):
        flat = [v if np.isfinite(v) else str(v) for v in array.ravel().tolist()]
        return {"shape": list(array.shape), "values": flat}

    return {
        "verified": report.verified.tolist(),
        "falsified": report.falsified.tolist(),
        "unknown": report.unknown.tolist(),
        "margin_lower": encode(np.asarray(report.margin_lower, float)),
        "labels": report.labels.tolist(),
        "predictions": report.predictions.tolist(),
        "adversarial_examples": encode(np.asarray(report.adversarial_examples, float)),
        "epsilon": report.epsilon,
        "method": report.method,
        "norm": report.norm,
        "input_range": list(report.input_range),
        "attack": report.attack,
        "seconds": report.seconds,
        "extra": {},
        "clean_accuracy": report.clean_accuracy,
        "verified_accuracy": report.verified_accuracy,
        "attack_accuracy": report.attack_accuracy,
        "format": FORMAT_V1,
    }


# --- consistency on load -----------------------------------------------------------


def _set(data, key, index, value):
    data[key][index] = value


def _set_margin(data, index, value):
    row = index * CLASSES + (0 if data["labels"][index] != 0 else 1)
    data["margin_lower"]["values"][row] = value


def _set_adversarial(data, index, value):
    size = int(np.prod(SHAPE))
    data["adversarial_examples"]["values"][index * size] = value


# (mutation of a verinet 0.1 file, what the error must say). Sample 4 is
# verified, 5 attacked, 6 misclassified, 7 unknown.
CASES = {
    "verified-but-misclassified": (
        lambda d: _set(d, "predictions", 4, (d["labels"][4] + 1) % CLASSES),
        "sample 4 is marked verified but is misclassified",
    ),
    "verified-with-negative-margin": (
        lambda d: _set_margin(d, 4, -0.25),
        "sample 4 is marked verified but its margin lower bounds",
    ),
    "verified-with-nan-margin": (
        lambda d: _set_margin(d, 4, "nan"),
        "sample 4 is marked verified",
    ),
    "verified-with-minus-inf-margin": (
        lambda d: _set_margin(d, 4, "-inf"),
        "sample 4 is marked verified",
    ),
    "negative-epsilon": (lambda d: d.update(epsilon=-0.05), "epsilon"),
    "infinite-epsilon": (lambda d: d.update(epsilon=float("inf")), "epsilon"),
    "unknown-norm": (lambda d: d.update(norm="l7"), "norm"),
    "reversed-input-range": (lambda d: d.update(input_range=[1.0, 0.0]), "low <= high"),
    "input-range-not-a-pair": (lambda d: d.update(input_range=[0.0]), "input_range"),
    "falsified-without-counterexample": (
        lambda d: _set_adversarial(d, 5, "nan"),
        "sample 5 is marked falsified but its counterexample is missing",
    ),
    "counterexample-outside-input-range": (
        lambda d: _set_adversarial(d, 5, 1.5),
        "sample 5 is marked falsified but its counterexample lies outside",
    ),
    "misclassified-but-not-falsified": (
        lambda d: (
            _set(d, "falsified", 6, False),
            _set(d, "unknown", 6, True),
            _set_adversarial(d, 6, "nan"),
        ),
        "sample 6 is misclassified",
    ),
    "unknown-with-counterexample": (
        lambda d: _set_adversarial(d, 7, 0.5),
        "sample 7 is not falsified but has a counterexample",
    ),
    "labels-shorter": (lambda d: d["labels"].pop(), "labels has shape"),
    "label-out-of-range": (lambda d: _set(d, "labels", 3, CLASSES), "labels[3]"),
    "summary-lies": (lambda d: d.update(verified_accuracy=0.99), "verified_accuracy"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_refuses_an_inconsistent_report(case, tmp_path):
    mutate, message = CASES[case]
    data = _v1_dict(_report(n=40, new_fields=False))
    mutate(data)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.raises(vn.InvalidInputError, match="inconsistent") as info:
        vn.CertificationReport.load(path)
    assert message in str(info.value)
    assert "old.json" in str(info.value)


def test_v1_files_still_load_and_the_check_uses_no_tolerance(tmp_path):
    report = _report(n=40, new_fields=False)
    path = tmp_path / "old.json"
    # A counterexample one float32 ulp above the input range is outside.
    data = _v1_dict(report)
    _set_adversarial(data, 5, float(np.nextafter(np.float32(1), np.float32(2))))
    path.write_text(json.dumps(data))
    with pytest.raises(vn.InvalidInputError, match="sample 5"):
        vn.CertificationReport.load(path)
    path.write_text(json.dumps(_v1_dict(report)))
    loaded = vn.CertificationReport.load(path)
    np.testing.assert_array_equal(loaded.verified, report.verified)
    np.testing.assert_array_equal(loaded.margin_lower, report.margin_lower)
    assert loaded.weights_sha256 is None and loaded.inputs is None


def test_counterexample_one_ulp_outside_the_ball_is_refused(tmp_path):
    report = _report(n=40)
    index = 5  # attacked: its counterexample is inside the ball
    assert report.falsified[index] and report.predictions[index] == report.labels[5]
    edge = np.float32(report.inputs[index].flat[0] + np.float32(0.05))
    while float(edge) - float(report.inputs[index].flat[0]) <= 0.05:
        edge = np.nextafter(edge, np.float32(2))
    report.adversarial_examples[index].flat[0] = edge
    with pytest.raises(vn.InvalidInputError, match="sample 5 .*outside the pert"):
        report.validate()
    with pytest.raises(vn.InvalidInputError, match="sample 5"):
        vn.CertificationReport.from_dict(report.to_dict())


def test_to_dict_round_trip_is_checked():
    report = _report(n=40)
    again = vn.CertificationReport.from_dict(json.loads(report.to_json()))
    assert again.content_sha256() == report.content_sha256()
    data = report.to_dict()
    data["epsilon"] = -1.0
    with pytest.raises(vn.InvalidInputError, match="epsilon"):
        vn.CertificationReport.from_dict(data)


# --- file layout --------------------------------------------------------------------


def test_save_writes_compact_json_with_summary_first_and_arrays_beside(tmp_path):
    report = _report()
    path = tmp_path / "report.json"
    report.save(path)
    assert sorted(os.listdir(tmp_path)) == ["report.json", "report.npz"]
    text = path.read_text()
    assert len(text) < 3000  # was ~60 KB for 360 samples
    assert text.startswith('{\n  "format"')  # indented
    data = json.loads(text)
    assert list(data)[:2] == ["format", "summary"]
    assert data["format"] == FORMAT
    assert data["summary"] == {
        "samples": N,
        "verified": 90,
        "falsified": 180,
        "unknown": 90,
        "clean_accuracy": 0.75,
        "verified_accuracy": 0.25,
        "attack_accuracy": 0.5,
    }
    assert data["arrays"] == {"file": "report.npz"}
    assert data["weights_sha256"] == "ab" * 32
    assert data["report_sha256"] == report.content_sha256()
    loaded = vn.CertificationReport.load(path)
    for name in ("verified", "labels", "margin_lower", "adversarial_examples"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(report, name))
    assert loaded.adversarial_examples.dtype == np.float32
    assert loaded.inputs.dtype == np.float32
    assert loaded.content_sha256() == report.content_sha256()


def test_load_refuses_arrays_of_another_report_or_missing_arrays(tmp_path):
    _report(seed=0).save(tmp_path / "a.json")
    _report(seed=1).save(tmp_path / "b.json")
    os.replace(tmp_path / "b.npz", tmp_path / "a.npz")
    with pytest.raises(vn.InvalidInputError, match="does not match its content"):
        vn.CertificationReport.load(tmp_path / "a.json")
    with pytest.raises(vn.InvalidInputError, match="'b.npz'.*copy both"):
        vn.CertificationReport.load(tmp_path / "b.json")


# --- display ------------------------------------------------------------------------


def test_repr_is_short_and_markdown_and_html_show_the_figures():
    report = _report(new_fields=False)
    text = repr(report)
    assert text == (
        "CertificationReport(method='crown', norm='linf', epsilon=0.05, n=360, "
        "verified=90, falsified=180, unknown=90)"
    )
    assert str(report) == text
    markdown = report.to_markdown()
    assert report._repr_markdown_() == markdown
    assert "| verified | 90 | 0.2500 |" in markdown
    assert "| falsified | 180 | 0.5000 |" in markdown
    assert "| unknown | 90 | 0.2500 |" in markdown
    assert len(markdown) < 1000
    page = report._repr_html_()
    assert "<table>" in page and "<td>180</td>" in page and len(page) < 2000


# --- writing ------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_saved_files_get_the_usual_mode_and_keep_an_existing_one(tmp_path, umask_022):
    report = _report(n=8, new_fields=False)
    (tmp_path / "old.json").write_text("{}")
    os.chmod(tmp_path / "old.json", 0o640)
    report.save(tmp_path / "old.json")
    assert stat.S_IMODE(os.stat(tmp_path / "old.json").st_mode) == 0o640
    report.save(tmp_path / "new.json")
    for name in ("new.json", "new.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


def test_save_errors_name_the_users_path_not_a_temporary_file(tmp_path, monkeypatch):
    report = _report(n=8, new_fields=False)
    missing = tmp_path / "no-such-folder" / "report.json"
    with pytest.raises(OSError) as info:
        report.save(missing)
    message = str(info.value)
    assert "no-such-folder" in message and "does not exist" in message
    assert "tmp" not in message.replace(str(tmp_path), "")
    assert ".verinet" not in message
    assert isinstance(info.value, vn.errors.FileWriteError)
    assert info.value.errno == errno.ENOENT

    # A read-only folder (simulated: the tests may run as root).
    def denied(name, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", name)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(OSError) as info:
        report.save(tmp_path / "report.json")
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(f"Cannot write {str(tmp_path / 'report.json')!r}")
    assert "Permission denied" in message and "writable" in message
    assert "verinet-tmp" not in message and ".report" not in message
    assert os.listdir(tmp_path) == []
