"""Certified radii (``certify(radius=True)``), ``robustness_curve`` and
``report.analyze()``."""

import verinet as vn  # noqa: I001 - verinet before keras

import keras
import numpy as np
import pytest

from verinet import layers as L
from verinet.bounds.api import margin_spec, resolve_method
from verinet.bounds.graph import bound_model
from verinet.bounds.perturbation import L2Ball, LinfBall
from verinet.errors import InvalidInputError, SoundnessError

verify_radius = pytest.importorskip("verinet.certify.radius")


def _linear(seed=0, inputs=6, classes=3):
    keras.utils.set_random_seed(seed)
    return vn.Sequential([L.Input((inputs,)), L.Dense(classes)])


def _exact_linear_radius(model, x, y, norm):
    """Distance from ``x`` to the nearest decision boundary of a linear
    classifier without an input range: min over j of the margin divided by
    the dual norm of ``w_y - w_j``."""
    w, b = (np.asarray(v, dtype=np.float64) for v in model.get_weights())
    radii = []
    for xi, yi in zip(x.astype(np.float64), y, strict=True):
        best = np.inf
        for j in range(w.shape[1]):
            if j == yi:
                continue
            d = w[:, yi] - w[:, j]
            margin = xi @ d + b[yi] - b[j]
            dual = np.sum(np.abs(d)) if norm == "linf" else np.sqrt(np.sum(d * d))
            best = min(best, margin / dual)
        radii.append(max(best, 0.0))
    return np.array(radii)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_radius_of_a_linear_classifier_is_its_exact_distance_to_the_boundary(norm):
    """CROWN is exact on a linear model: the bisected radius lies within one
    bisection step below the exact distance, never above it."""
    model = _linear()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    eps = 0.05 if norm == "linf" else 0.2
    report = vn.certify(model, x, y, eps, norm=norm, radius=True, radius_max=2.0)
    exact = np.minimum(_exact_linear_radius(model, x, y, norm), 2.0)
    got = report.certified_radius
    step = 2.0 / 2**12
    assert np.all(got <= exact + 1e-5)
    assert np.all(got >= exact - step - 1e-5)
    assert report.extra["radius_max"] == 2.0
    assert np.all(got[report.verified] >= eps)


def _relu_net(seed=2):
    keras.utils.set_random_seed(seed)
    return vn.Sequential(
        [L.Input((5,)), L.Dense(16), L.ReLU(), L.Dense(16), L.ReLU(), L.Dense(3)]
    )


def _proven(model, x, y, eps, method, norm):
    margins = vn.margin_bounds(model, x, y, eps, method=method, norm=norm)
    return np.all(margins > 0, axis=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_ibp_radius_is_the_edge_of_what_ibp_proves_per_sample(norm):
    """IBP bounds only loosen as the ball grows, so the radius it proves is
    an interval's end: each sample is proven at its radius (by a separate
    one-sample bound) and not one bisection step beyond it."""
    model = _relu_net()
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (20, 5)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    report = vn.certify(
        model, x, y, 0.01, method="ibp", norm=norm, radius=True, radius_max=1.0
    )
    radii = report.certified_radius
    assert np.any(radii > 0.01) and np.any(radii < 0.5)
    step = 1.0 / 2**12
    for i in range(len(x)):
        xi, yi = x[i : i + 1], y[i : i + 1]
        if radii[i] > 0:
            assert _proven(model, xi, yi, radii[i], "ibp", norm)[0], i
        if radii[i] < 1.0:
            assert not _proven(model, xi, yi, radii[i] + 2 * step, "ibp", norm)[0], i


def test_no_attack_breaks_a_sample_within_its_certified_radius():
    model = _relu_net(4)
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (30, 5)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    report = vn.certify(model, x, y, 0.05, radius=True)
    radii = report.certified_radius
    assert np.any(radii > 0)
    for i in np.flatnonzero(radii > 0):
        attack = vn.attacks.PGD(model, float(radii[i]), steps=50, restarts=5)
        adv = attack.perturb(x[i : i + 1], y[i : i + 1])
        pred = np.argmax(keras.ops.convert_to_numpy(model(adv)), axis=1)
        assert pred[0] == y[i], i
    # A falsified sample's radius stays short of its counterexample.
    index, examples = report.counterexamples()
    for i, adv in zip(index, examples, strict=True):
        assert radii[i] < np.max(np.abs(adv - x[i])) or radii[i] == 0


def test_a_radius_reaching_a_counterexample_is_a_soundness_error(monkeypatch):
    """``certify`` checks the radii against its own counterexamples."""
    certify_module = __import__("verinet.certify.certify", fromlist=["x"])
    model = _relu_net(6)
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (30, 5)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    y[0] = y[0]  # correct labels: only the attack can falsify
    if not vn.certify(model, x, y, 0.5).falsified.any():
        pytest.skip("no counterexample at this radius")
    monkeypatch.setattr(
        certify_module,
        "certified_radii",
        lambda model, graph, x, *a, **k: np.full(len(x), 10.0),
    )
    with pytest.raises(SoundnessError, match="certified radii"):
        vn.certify(model, x, y, 0.5, radius=True, radius_max=10.0)


def test_radius_survives_save_and_load(tmp_path):
    model = _linear(8)
    x = np.random.default_rng(9).normal(size=(5, 6)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    report = vn.certify(model, x, y, 0.1, radius=True)
    report.save(tmp_path / "report.json")
    loaded = vn.CertificationReport.load(tmp_path / "report.json")
    np.testing.assert_array_equal(loaded.certified_radius, report.certified_radius)
    assert vn.certify(model, x, y, 0.1).certified_radius is None


def test_radius_refuses_a_per_feature_epsilon_and_a_bad_radius_max():
    model = _linear()
    x = np.zeros((2, 6), dtype=np.float32)
    with pytest.raises(InvalidInputError, match="per-feature"):
        vn.certify(model, x, [0, 1], np.full(6, 0.1), radius=True)
    with pytest.raises(InvalidInputError, match="radius_max"):
        vn.certify(model, x, [0, 1], 0.1, radius=True, radius_max=-1.0)


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
@pytest.mark.parametrize("ball", [LinfBall, L2Ball])
def test_a_radius_per_sample_bounds_as_each_sample_alone(method, ball):
    """The bisection bounds a batch with one radius per sample: the same
    bounds as each sample bounded alone with its radius as a number."""
    model = _relu_net(10)
    x = np.random.default_rng(11).uniform(0, 1, (5, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    radii = np.array([0.01, 0.2, 0.05, 0.5, 0.0], dtype=np.float32)
    _, graph = bound_model(model)
    C = keras.ops.convert_to_tensor(margin_spec(y, 3))
    low, _ = resolve_method(method).bounds(
        graph,
        keras.ops.convert_to_tensor(x),
        ball(radii.reshape(5, 1), (0.0, 1.0)),
        C,
        lower=True,
        upper=False,
    )
    low = keras.ops.convert_to_numpy(low)
    for i in range(5):
        alone = vn.margin_bounds(
            model,
            x[i : i + 1],
            y[i : i + 1],
            float(radii[i]),
            method=method,
            norm=ball.norm,
            input_range=(0.0, 1.0),
        )[0]
        keep = np.arange(3) != y[i]
        np.testing.assert_allclose(low[i][keep], alone[keep], rtol=1e-5, atol=1e-5)


# -- robustness_curve ------------------------------------------------------


def test_curve_matches_certify_at_each_epsilon_and_ibp_only_falls():
    model = _relu_net(12)
    rng = np.random.default_rng(13)
    x = rng.uniform(0, 1, (40, 5)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    y[:5] = (y[:5] + 1) % 3  # a few misclassified
    epsilons = [0.0, 0.02, 0.05, 0.1, 0.3]
    curve = vn.robustness_curve(
        model, x, y, epsilons, method="ibp", input_range=(0, 1), verbose=0
    )
    assert curve["epsilons"] == epsilons and curve["samples"] == 40
    assert curve["clean_accuracy"] == pytest.approx(35 / 40)
    for k, eps in enumerate(epsilons):
        report = vn.certify(model, x, y, eps, method="ibp", input_range=(0, 1))
        assert curve["verified_accuracy"][k] == report.verified_accuracy
        assert curve["verified_accuracy"][k] <= curve["attack_accuracy"][k]
    assert np.all(np.diff(curve["verified_accuracy"]) <= 0)
    assert curve["verified_accuracy"][0] == pytest.approx(35 / 40)
    assert curve["verified_accuracy"][-1] < curve["verified_accuracy"][0]


@pytest.mark.parametrize(
    "epsilons, words",
    [
        ([], "non-empty"),
        ([0.1, -0.1], "position 1"),
        ([np.nan], ">= 0"),
        ("a", "list of numbers"),
    ],
)
def test_curve_refuses_bad_epsilons(epsilons, words):
    model = _linear()
    with pytest.raises(InvalidInputError, match=words):
        vn.robustness_curve(model, np.zeros((2, 6)), [0, 1], epsilons)


# -- analyze -----------------------------------------------------------------


def test_analyze_counts_per_class_and_orders_the_weakest_inputs():
    model = _relu_net(14)
    rng = np.random.default_rng(15)
    x = rng.uniform(0, 1, (60, 5)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    y[:6] = (y[:6] + 1) % 3
    report = vn.certify(model, x, y, 0.08, input_range=(0, 1))
    analysis = report.analyze(top=5, bins=10)
    correct = report.predictions == report.labels
    for label, row in analysis.per_class.items():
        mask = report.labels == label
        assert row["samples"] == mask.sum()
        assert row["verified"] == np.sum(report.verified & mask)
        assert row["unknown"] == np.sum(report.unknown & mask)
        assert row["misclassified"] == np.sum(~correct & mask)
        assert row["attacked"] == np.sum(report.falsified & correct & mask)
        assert (
            sum(row[k] for k in ("verified", "attacked", "misclassified", "unknown"))
            == row["samples"]
        )
    smallest = analysis.smallest_margin
    assert np.all(np.isnan(smallest[~correct]))
    np.testing.assert_allclose(
        smallest[correct], np.min(report.margin_lower[correct], axis=1)
    )
    counts, edges = analysis.margin_histogram
    assert counts.sum() == correct.sum() and len(edges) == 11
    least = analysis.least_certified
    assert len(least) == 5
    assert not np.any(report.falsified[least])
    assert np.all(np.diff(smallest[least]) >= 0)
    candidates = correct & ~report.falsified
    assert smallest[least[-1]] <= np.sort(smallest[candidates])[4]
    text = str(analysis)
    assert f"verified      {int(report.verified.sum()):>6}" in text
    assert analysis.to_dict()["least_certified"] == least.tolist()


def test_certified_accuracy_counts_correct_samples_with_a_large_enough_radius():
    model = _relu_net(16)
    rng = np.random.default_rng(17)
    x = rng.uniform(0, 1, (30, 5)).astype(np.float32)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1)
    y[:4] = (y[:4] + 1) % 3  # misclassified: radius 0, never counted
    report = vn.certify(model, x, y, 0.05, input_range=(0, 1), radius=True)
    radii = report.certified_radius
    correct = report.predictions == report.labels
    for r in (0.0, 0.05, 0.1):
        expected = np.mean(correct & (radii >= r))
        assert report.certified_accuracy(r) == pytest.approx(expected)
    curve = report.certified_accuracy([0.0, 0.05, 0.1])
    assert np.all(np.diff(curve) <= 0) and curve[0] == pytest.approx(26 / 30)
    assert report.certified_accuracy(0.05) == pytest.approx(report.verified_accuracy)
    with pytest.raises(InvalidInputError, match="radius=True"):
        vn.certify(model, x, y, 0.05).certified_accuracy(0.1)
    with pytest.raises(InvalidInputError, match=">= 0"):
        report.certified_accuracy([-0.1])
