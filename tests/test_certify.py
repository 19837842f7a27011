"""certify() on a model trained on the bundled digits, and its report."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from keras import ops

import verinet as vn
from verinet import layers as L
from verinet.certify import report as report_module

FAST_PGD = {"steps": 10, "restarts": 1}


def _np(t):
    return ops.convert_to_numpy(t)


@pytest.fixture(scope="module")
def digits():
    return vn.datasets.digits()


@pytest.fixture(scope="module")
def model(digits):
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    net = vn.Sequential(
        [L.Input((8, 8, 1)), L.Flatten(), L.Dense(64), L.ReLU(), L.Dense(10)]
    )
    net.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    net.fit(x_train, y_train, epochs=12, batch_size=128, verbose=0)
    return net


@pytest.fixture(scope="module")
def test_set(digits):
    return digits[1]


@pytest.fixture(scope="module")
def predictions(model, test_set):
    return _np(model(test_set[0], training=False)).argmax(axis=1)


@pytest.fixture(scope="module")
def linf_report(model, test_set):
    x, y = test_set
    return vn.certify(
        model,
        x,
        y,
        0.05,
        method="crown",
        input_range=(0.0, 1.0),
        verbose=0,
        attack_options=FAST_PGD,
    )


@pytest.fixture(scope="module")
def l2_report(model, test_set):
    x, y = test_set
    return vn.certify(
        model,
        x[:150],
        y[:150],
        0.4,
        method="crown",
        norm="l2",
        input_range=(0.0, 1.0),
        verbose=0,
        attack_options=FAST_PGD,
    )


# --- the data set ------------------------------------------------------------------


def test_digits_dataset(digits):
    (x_train, y_train), (x_test, y_test) = digits
    assert x_train.shape == (1437, 8, 8, 1)
    assert x_test.shape == (360, 8, 8, 1)
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    for x in (x_train, x_test):
        assert x.dtype == np.float32
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (y_train, y_test):
        assert np.issubdtype(y.dtype, np.integer)
        assert set(np.unique(y)) == set(range(10))
    # Stratified: every class holds about a tenth of each split.
    counts = np.bincount(y_test, minlength=10)
    assert counts.min() >= 30 and counts.max() <= 40
    # Deterministic: a second load gives the very same split.
    (x_train2, y_train2), (x_test2, y_test2) = vn.datasets.digits()
    np.testing.assert_array_equal(x_train2, x_train)
    np.testing.assert_array_equal(y_train2, y_train)
    np.testing.assert_array_equal(x_test2, x_test)
    np.testing.assert_array_equal(y_test2, y_test)
    # Train and test are disjoint samples (no image appears in both).
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    shared = sum(row.tobytes() in train_rows for row in x_test.reshape(360, -1))
    assert shared <= 5  # the raw data holds a handful of duplicate images


def test_trained_model_is_accurate(predictions, test_set):
    assert np.mean(predictions == test_set[1]) >= 0.9


# --- verdicts ----------------------------------------------------------------------


def _check_partition(report, n):
    for name in ("verified", "falsified", "unknown"):
        array = getattr(report, name)
        assert array.dtype == bool and array.shape == (n,)
    total = report.verified.astype(int) + report.falsified + report.unknown
    np.testing.assert_array_equal(total, np.ones(n, int))


@pytest.mark.parametrize("which", ["linf_report", "l2_report"])
def test_verdicts_are_a_partition(which, request):
    report = request.getfixturevalue(which)
    _check_partition(report, report.num_samples)
    # The radius is chosen so that both proofs and counterexamples occur.
    assert report.verified.any() and report.falsified.any()
    assert report.margin_lower.shape == (report.num_samples, 10)
    rows = np.arange(report.num_samples)
    assert np.all(np.isposinf(report.margin_lower[rows, report.labels]))
    # Verified exactly when correct and every margin bound is positive.
    proven = (report.predictions == report.labels) & np.all(
        report.margin_lower > 0, axis=1
    )
    np.testing.assert_array_equal(report.verified, proven)


def test_report_matches_model(linf_report, predictions, test_set):
    np.testing.assert_array_equal(linf_report.predictions, predictions)
    np.testing.assert_array_equal(linf_report.labels, test_set[1])
    assert linf_report.clean_accuracy == pytest.approx(
        np.mean(predictions == test_set[1])
    )
    assert linf_report.verified_accuracy == pytest.approx(linf_report.verified.mean())
    assert linf_report.attack_accuracy == pytest.approx(
        1 - linf_report.falsified.mean()
    )
    assert linf_report.verified_accuracy <= linf_report.attack_accuracy
    assert linf_report.attack_accuracy <= linf_report.clean_accuracy
    assert (linf_report.epsilon, linf_report.method, linf_report.norm) == (
        0.05,
        "crown",
        "linf",
    )
    assert tuple(linf_report.input_range) == (0.0, 1.0)


@pytest.mark.parametrize("which", ["linf_report", "l2_report"])
def test_counterexamples_are_real(which, request, model, test_set):
    report = request.getfixturevalue(which)
    n = report.num_samples
    x = test_set[0][:n]
    index, examples = report.counterexamples()
    np.testing.assert_array_equal(index, np.flatnonzero(report.falsified))
    assert len(index) > 0
    assert examples.shape == (len(index), 8, 8, 1)
    assert np.all(np.isfinite(examples))
    # Each counterexample really changes the prediction away from the label.
    adv_pred = _np(model(examples.astype("float32"), training=False)).argmax(axis=1)
    assert np.all(adv_pred != report.labels[index])
    # ...and lies in the perturbation set.
    delta = (examples - x[index]).reshape(len(index), -1)
    if report.norm == "linf":
        assert np.abs(delta).max() <= report.epsilon + 1e-6
    else:
        assert np.linalg.norm(delta, axis=1).max() <= report.epsilon * (1 + 1e-5)
    assert examples.min() >= 0.0 and examples.max() <= 1.0
    # Samples that are not falsified carry no example.
    assert np.all(np.isnan(report.adversarial_examples[~report.falsified]))


def test_misclassified_samples_are_their_own_counterexample(
    model, test_set, predictions
):
    x, y = test_set
    wrong = np.flatnonzero(predictions != y)
    right = np.flatnonzero(predictions == y)[:30]
    assert len(wrong) >= 1
    # Add samples given a deliberately wrong label.
    flipped = right[:5]
    pick = np.concatenate([wrong, right])
    labels = y[pick].copy()
    labels[len(wrong) : len(wrong) + 5] = (predictions[flipped] + 1) % 10
    report = vn.certify(
        model, x[pick], labels, 0.02, verbose=0, attack_options=FAST_PGD
    )
    misclassified = report.predictions != labels
    assert misclassified.sum() == len(wrong) + 5
    assert np.all(report.falsified[misclassified])
    assert not np.any(report.verified[misclassified])
    np.testing.assert_array_equal(
        report.adversarial_examples[misclassified], x[pick][misclassified]
    )


def test_epsilon_zero_verifies_the_correct_samples(model, test_set, predictions):
    x, y = test_set
    report = vn.certify(model, x, y, 0.0, method="crown", verbose=0)
    correct = predictions == y
    np.testing.assert_array_equal(report.falsified, ~correct)
    assert not np.any(report.verified & ~correct)
    assert report.verified.sum() >= correct.sum() - 1
    assert report.verified_accuracy == pytest.approx(report.clean_accuracy, abs=0.01)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_large_epsilon_is_not_certified(model, test_set, method):
    x, y = test_set
    report = vn.certify(
        model,
        x[:120],
        y[:120],
        0.3,
        method=method,
        input_range=(0.0, 1.0),
        attack=None,
        verbose=0,
    )
    assert report.verified_accuracy <= 0.05


def test_crown_at_least_as_tight_as_ibp(model, test_set):
    x, y = test_set
    kwargs = dict(input_range=(0.0, 1.0), attack=None, verbose=0)
    ibp = vn.certify(model, x, y, 0.01, method="ibp", **kwargs)
    crown = vn.certify(model, x, y, 0.01, method="crown", **kwargs)
    assert crown.verified.sum() >= ibp.verified.sum()
    assert np.all(crown.verified[ibp.verified])
    assert np.all(crown.margin_lower >= ibp.margin_lower - 1e-4)
    # At this radius CROWN's linear relaxation proves something IBP cannot.
    assert crown.verified.sum() > ibp.verified.sum()


def test_without_attack_only_misclassified_are_falsified(model, test_set, predictions):
    x, y = test_set
    report = vn.certify(model, x, y, 0.1, attack=None, verbose=0)
    np.testing.assert_array_equal(report.falsified, predictions != y)
    assert report.attack is None
    assert report.unknown.any()
    assert "no attack" in report.summary()


def test_attack_finds_more_than_misclassification(linf_report):
    misclassified = linf_report.predictions != linf_report.labels
    assert (linf_report.falsified & ~misclassified).sum() > 0


def test_summary_mentions_the_numbers(linf_report):
    text = linf_report.summary()
    report = linf_report
    assert "crown" in text and "linf" in text and "0.05" in text
    assert str(report.num_samples) in text
    for name in ("verified", "falsified", "unknown"):
        count = int(getattr(report, name).sum())
        line = next(row for row in text.splitlines() if row.strip().startswith(name))
        assert str(count) in line.split()
    assert f"{report.clean_accuracy:.4f}" in text
    assert f"{report.verified_accuracy:.4f}" in text
    assert f"{report.attack_accuracy:.4f}" in text
    assert "pgd" in text


# --- save / load ------------------------------------------------------------------


def _assert_reports_equal(a, b):
    for field in dataclasses.fields(vn.CertificationReport):
        left, right = getattr(a, field.name), getattr(b, field.name)
        if isinstance(left, np.ndarray):
            assert isinstance(right, np.ndarray), field.name
            assert left.shape == right.shape, field.name
            if left.dtype == bool or np.issubdtype(left.dtype, np.integer):
                assert right.dtype == left.dtype, field.name
            np.testing.assert_array_equal(left, right, err_msg=field.name)
        elif field.name == "input_range" and left is not None:
            assert tuple(left) == tuple(right)
        else:
            assert left == right, field.name


def _synthetic_report():
    margins = np.array([[np.inf, 0.5, 2.0], [-1.25, np.inf, np.nan]])
    adversarial = np.array([[[np.nan, np.nan]], [[0.25, -0.0]]])
    return vn.CertificationReport(
        verified=np.array([True, False]),
        falsified=np.array([False, True]),
        unknown=np.array([False, False]),
        margin_lower=margins,
        adversarial_examples=adversarial,
        labels=np.array([0, 1]),
        predictions=np.array([0, 2]),
        epsilon=0.125,
        method="crown-ibp",
        norm="l2",
        input_range=(-1.0, 1.0),
        attack="fgsm",
        seconds=3.5,
        extra={"note": "synthetic", "values": [1, 2.5]},
    )


@pytest.mark.parametrize("which", ["linf_report", "synthetic"])
def test_save_load_round_trip(which, request, tmp_path):
    report = (
        _synthetic_report() if which == "synthetic" else request.getfixturevalue(which)
    )
    path = tmp_path / "report.json"
    report.save(path)
    loaded = vn.CertificationReport.load(path)
    _assert_reports_equal(report, loaded)
    assert np.isnan(loaded.adversarial_examples).any()
    assert np.isposinf(loaded.margin_lower).any()
    assert loaded.summary() == report.summary()
    # A string path works as well as a Path.
    report.save(str(path))
    _assert_reports_equal(report, vn.CertificationReport.load(str(path)))


def test_saved_file_is_standard_json(tmp_path):
    path = tmp_path / "report.json"
    _synthetic_report().save(path)
    text = path.read_text()
    # Strict JSON: no bare NaN/Infinity tokens.
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert data["summary"]["verified"] == 1 and data["summary"]["falsified"] == 1
    assert data["epsilon"] == 0.125
    # The single-document form carries the arrays inline, also strict JSON.
    inline = json.loads(
        _synthetic_report().to_json(),
        parse_constant=lambda c: pytest.fail(f"bare {c}"),
    )
    assert inline["verified"] == [True, False]


def test_save_leaves_no_temporary_files(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    report = _synthetic_report()
    report.save(folder / "a.json")
    report.save(folder / "a.json")  # overwrite
    report.save(folder / "b.json")
    assert sorted(os.listdir(folder)) == ["a.json", "a.npz", "b.json", "b.npz"]


@pytest.mark.parametrize("where", ["to_json", "json.dumps", "os.replace"])
def test_failed_save_leaves_existing_file_untouched(where, tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text("previous contents")

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    if where == "to_json":
        monkeypatch.setattr(vn.CertificationReport, "to_json", boom)
    elif where == "json.dumps":
        monkeypatch.setattr(report_module.json, "dumps", boom)
    else:
        monkeypatch.setattr(report_module.os, "replace", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _synthetic_report().save(path)
    assert path.read_text() == "previous contents"
    assert os.listdir(tmp_path) == ["report.json"]


def test_failed_save_to_new_path_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        vn.CertificationReport,
        "to_json",
        lambda self, *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):
        _synthetic_report().save(tmp_path / "new.json")
    assert os.listdir(tmp_path) == []


def _valid_text():
    return _synthetic_report().to_json()


def _with(**changes):
    data = json.loads(_valid_text())
    for key, value in changes.items():
        if value is None and key.startswith("drop_"):
            data.pop(key[5:])
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty"),
        pytest.param(_valid_text()[: len(_valid_text()) // 2], id="truncated"),
        pytest.param("{not json at all", id="garbage"),
        pytest.param("[1, 2, 3]", id="list"),
        pytest.param('"a string"', id="string"),
        pytest.param("{}", id="empty-dict"),
        pytest.param('{"verified": [true]}', id="wrong-dict"),
        pytest.param(_with(format="something/else"), id="wrong-format"),
        pytest.param(_with(drop_labels=None), id="missing-labels"),
        pytest.param(_with(drop_margin_lower=None), id="missing-margins"),
        pytest.param(_with(margin_lower=[1, 2]), id="margins-not-encoded"),
        pytest.param(
            _with(margin_lower={"shape": [5, 5], "values": [1.0]}), id="bad-shape"
        ),
        pytest.param(
            _with(margin_lower={"shape": [1], "values": ["abc"]}), id="bad-value"
        ),
        pytest.param(_with(verified=[True, True]), id="not-a-partition"),
        pytest.param(_with(epsilon="wide"), id="epsilon-not-number"),
        pytest.param(_with(extra=[1, 2, 3]), id="extra-not-dict"),
    ],
)
def test_load_rejects_invalid_files(content, tmp_path):
    path = tmp_path / "report.json"
    path.write_text(content)
    with pytest.raises(vn.InvalidInputError):
        vn.CertificationReport.load(path)


def test_load_rejects_binary_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_bytes(b"\xff\xfe\x00\x81 not a report")
    with pytest.raises(vn.InvalidInputError):
        vn.CertificationReport.load(path)


def test_report_constructor_refuses_overlapping_verdicts():
    with pytest.raises(AssertionError):
        dataclasses.replace(_synthetic_report(), unknown=np.array([True, False]))


# --- soundness check ------------------------------------------------------------------


class _UnsoundIBP(vn.bounds.IBP):
    """Claims every margin is hugely positive: a deliberately wrong bound."""

    name = "unsound"

    def bounds(self, graph, x, perturbation, C=None, lower=True, upper=True):
        low, up = super().bounds(graph, x, perturbation, C, lower, upper)
        if low is not None:
            low = ops.full_like(low, 1e6)
        return low, up


def test_unsound_bound_raises_soundness_error(model, test_set):
    x, y = test_set
    with pytest.raises(vn.SoundnessError, match="unsound") as info:
        vn.certify(
            model,
            x[:60],
            y[:60],
            0.3,
            method=_UnsoundIBP(),
            input_range=(0.0, 1.0),
            verbose=0,
            attack_options=FAST_PGD,
        )
    assert isinstance(info.value, vn.VerinetError)
    # Without an attack nothing can refute the bogus proof.
    report = vn.certify(
        model,
        x[:60],
        y[:60],
        0.3,
        method=_UnsoundIBP(),
        input_range=(0.0, 1.0),
        attack=None,
        verbose=0,
    )
    assert report.verified.sum() == (report.predictions == report.labels).sum()


def test_custom_attack_object_is_used(model, test_set):
    x, y = test_set

    class Shift:
        """Moves every pixel by +epsilon (clipped): a weak but valid attack."""

        calls = 0

        def perturb(self, xb, yb):
            Shift.calls += 1
            return np.clip(xb + 0.05, 0.0, 1.0)

    report = vn.certify(
        model, x[:40], y[:40], 0.05, input_range=(0, 1), attack=Shift(), verbose=0
    )
    assert Shift.calls == 1
    assert report.attack == "Shift"
    _check_partition(report, 40)


def test_certify_predicts_in_inference_mode(rng):
    # Dropout and batch norm behave differently in training: certify's clean
    # and adversarial predictions must be the inference-mode ones.
    keras.utils.set_random_seed(4)
    model = vn.Sequential(
        [
            L.Input((6,)),
            L.Dense(32),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dropout(0.5),
            L.Dense(4),
        ]
    )
    bn = model.layers[1]
    bn.moving_mean.assign(rng.normal(0, 2, 32).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.2, 5, 32).astype("float32"))
    x = rng.uniform(0, 1, (64, 6)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False)).argmax(1)
    y = (expected + (np.arange(64) % 5 == 0)) % 4  # a few misclassified
    report = vn.certify(model, x, y, 0.01, input_range=(0, 1), verbose=0)
    np.testing.assert_array_equal(report.predictions, expected)
    np.testing.assert_array_equal(report.falsified[y != expected], True)
    index, points = report.counterexamples()
    broken = index[y[index] == expected[index]]  # found by the attack
    if len(broken):
        adv = keras.ops.convert_to_numpy(model(report.adversarial_examples[broken]))
        assert np.all(adv.argmax(1) != y[broken])
