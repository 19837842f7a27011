"""Randomized smoothing: Cohen et al.'s PREDICT / CERTIFY on fixed base models.

A linear base classifier ``f(x) = [w.x + b > 0]`` has a known smoothed
classifier: under ``N(0, sigma^2 I)`` noise the probability of the side of
``x`` is exactly ``Phi(d / sigma)``, ``d`` the distance to the hyperplane, so
the exact certified radius is ``d``. A constant base classifier gives every
draw to one class, so its certificate has a closed form.
"""

import verinet as vn  # noqa: I001 - verinet before keras

import json

import numpy as np
import pytest
import torch
from scipy import stats

from verinet import layers
from verinet.smoothing import ABSTAIN, SmoothedClassifier, SmoothingReport

W = np.array([0.6, -0.8, 0.0])  # ||W|| = 1: w.x + b is the signed distance
B = 0.1


def _linear_model(w=W, b=B):
    """Two logits ``+-(w.x + b)``: class 0 where ``w.x + b > 0``."""
    model = vn.Sequential([layers.Input((len(w),)), layers.Dense(2)])
    kernel = np.stack([w, -w], axis=1).astype("float32")
    model.layers[-1].set_weights([kernel, np.array([b, -b], "float32")])
    return model


def _constant_model(winner=0, classes=3, shape=(4, 4, 1)):
    """A classifier of images that always says ``winner``, whatever the noise."""
    model = vn.Sequential(
        [layers.Input(shape), layers.Flatten(), layers.Dense(classes)]
    )
    bias = np.zeros(classes, "float32")
    bias[winner] = 5.0
    model.layers[-1].set_weights([np.zeros((int(np.prod(shape)), classes)), bias])
    return model


def _points_at(distances):
    """Inputs at the given signed distances from the linear model's boundary."""
    unit = W / np.linalg.norm(W)
    foot = -B * unit  # on the hyperplane
    other = np.array([0.0, 0.0, 1.0])  # along the boundary
    return np.stack(
        [foot + d * unit + 0.3 * i * other for i, d in enumerate(distances)]
    ).astype("float32")


# -- the certificate's formula ----------------------------------------------


@pytest.mark.parametrize(
    "sigma, n, alpha", [(0.25, 1000, 0.001), (0.5, 300, 0.01), (1.0, 5000, 0.05)]
)
def test_constant_classifier_gets_the_closed_form_radius(sigma, n, alpha):
    # Every draw is class 2: k = n, and the one-sided Clopper-Pearson bound
    # Beta(alpha; n, 1) is alpha ** (1 / n).
    smoothed = SmoothedClassifier(_constant_model(winner=2), sigma=sigma)
    x = np.random.default_rng(0).uniform(0, 1, (3, 4, 4, 1))
    report = smoothed.certify(x, [2, 2, 0], n0=10, n=n, alpha=alpha, seed=0, verbose=0)
    p_lower = alpha ** (1 / n)
    np.testing.assert_array_equal(report.top_count, [n, n, n])
    np.testing.assert_array_equal(report.prediction, [2, 2, 2])
    np.testing.assert_allclose(report.p_lower, p_lower, rtol=1e-12)
    np.testing.assert_allclose(
        report.radius, sigma * stats.norm.ppf(p_lower), rtol=1e-10
    )
    assert report.certified_accuracy(0.0) == pytest.approx(2 / 3)


def test_linear_classifier_radius_is_cohens_formula_on_its_counts():
    sigma, n, alpha = 0.5, 20_000, 0.001
    distances = np.array([0.7, 0.25, -0.1, -0.4])
    smoothed = SmoothedClassifier(_linear_model(), sigma=sigma)
    labels = (distances < 0).astype(int)
    report = smoothed.certify(
        _points_at(distances), labels, n=n, alpha=alpha, seed=1, verbose=0
    )
    k = report.top_count
    # The counts are draws of Binomial(n, Phi(|d| / sigma)).
    p_true = stats.norm.cdf(np.abs(distances) / sigma)
    z = (k / n - p_true) / np.sqrt(p_true * (1 - p_true) / n)
    assert np.all(np.abs(z) < 5), z
    # Radius from the same counts, computed here independently: the lower
    # end of the two-sided exact interval at level 1 - 2 alpha.
    p_lower = stats.beta.ppf(alpha, k, n - k + 1)
    for ki, pi in zip(k, p_lower, strict=True):
        ci = stats.binomtest(int(ki), n).proportion_ci(
            confidence_level=1 - 2 * alpha, method="exact"
        )
        assert ci.low == pytest.approx(pi, rel=1e-9)
    np.testing.assert_allclose(report.p_lower, p_lower, rtol=1e-12)
    np.testing.assert_array_equal(report.prediction, labels)
    np.testing.assert_allclose(report.radius, sigma * stats.norm.ppf(p_lower))


def test_radius_approaches_the_distance_to_the_hyperplane_from_below():
    sigma, n = 0.5, 50_000
    distances = np.array([0.1, 0.3, 0.6, -0.2, -0.5])
    smoothed = SmoothedClassifier(_linear_model(), sigma=sigma)
    x, labels = _points_at(distances), (distances < 0).astype(int)
    for seed in range(3):
        report = smoothed.certify(
            x, labels, n=n, batch_size=25_000, seed=seed, verbose=0
        )
        np.testing.assert_array_equal(report.prediction, labels)
        # Sound (with probability 1 - alpha each): never above the exact radius.
        assert np.all(report.radius <= np.abs(distances)), report.radius
        # Tight: with 50,000 draws within 0.05 of it.
        assert np.all(report.radius >= np.abs(distances) - 0.05), report.radius


def test_draws_are_counted_for_their_own_sample_across_batches():
    # Far from the boundary every draw lands on the sample's side; a batch
    # of 333 copies spans samples, and each row must still sum to n.
    smoothed = SmoothedClassifier(_linear_model(), sigma=0.1)
    x = _points_at([2.0, -2.0, 2.0, -2.0])
    report = smoothed.certify(
        x, [0, 1, 0, 1], n0=50, n=1000, batch_size=333, seed=0, verbose=0
    )
    np.testing.assert_array_equal(report.candidate, [0, 1, 0, 1])
    np.testing.assert_array_equal(report.top_count, [1000] * 4)
    np.testing.assert_array_equal(
        smoothed.predict(x, n=500, batch_size=333, seed=0, verbose=0), [0, 1, 0, 1]
    )


# -- abstention ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_point_on_the_boundary_abstains(seed):
    smoothed = SmoothedClassifier(_linear_model(), sigma=0.5)
    x = _points_at([0.0, 0.8, -0.8])
    np.testing.assert_array_equal(
        smoothed.predict(x, n=2000, seed=seed, verbose=0), [ABSTAIN, 0, 1]
    )
    report = smoothed.certify(x, [0, 0, 1], n=2000, seed=seed, verbose=0)
    assert report.prediction[0] == ABSTAIN and report.radius[0] == 0.0
    assert report.p_lower[0] < 0.5
    np.testing.assert_array_equal(report.prediction[1:], [0, 1])
    assert np.all(report.radius[1:] > 0)
    np.testing.assert_array_equal(report.abstained, [True, False, False])


def test_predict_abstains_exactly_when_the_binomial_test_is_inconclusive():
    # Near the boundary some points abstain and some do not; the decision must
    # be the two-sided binomial test of the two top counts at 1/2 and alpha.
    from verinet.smoothing.sampling import (
        SELECTION,
        count_predictions,
        model_device,
        sample_seeds,
    )

    sigma, n, seed = 0.5, 2000, 3
    x = _points_at(np.linspace(0.0, 0.06, 16))
    smoothed = SmoothedClassifier(_linear_model(), sigma=sigma)
    # The same noise (same per-sample seeds, batch size and device) gives
    # predict's counts.
    device = model_device(smoothed.model)
    counts = count_predictions(
        smoothed.model,
        torch.as_tensor(x, device=device),
        sigma,
        n,
        2,
        1000,
        sample_seeds(seed, range(len(x)), SELECTION),
    )
    counts = counts.cpu().numpy()
    p = np.array([stats.binomtest(int(k), n, 0.5).pvalue for k in counts.max(1)])
    near = np.sort(p[(p > 1e-4) & (p < 0.5)])
    assert len(near) >= 4, p  # the seed gives p-values on both sides of each alpha
    # alpha just below and just above observed p-values: each point flips.
    for alpha in np.concatenate([near[::2] * 0.999, near[::2] * 1.001]):
        predictions = smoothed.predict(x, n=n, alpha=alpha, seed=seed, verbose=0)
        expected = np.where(p > alpha, ABSTAIN, counts.argmax(axis=1))
        np.testing.assert_array_equal(predictions, expected)
        assert ABSTAIN in predictions and 0 in predictions


# -- certified accuracy -----------------------------------------------------


def _hand_report():
    return SmoothingReport(
        prediction=[0, 1, ABSTAIN, 2, 2, 1],
        radius=[0.9, 0.3, 0.0, 0.5, 0.1, 0.0],
        labels=[0, 1, 1, 2, 0, 1],
        candidate=[0, 1, 1, 2, 2, 1],
        top_count=[90, 70, 40, 80, 60, 51],
        p_lower=[0.8, 0.7, 0.3, 0.75, 0.55, 0.5],
        sigma=0.25,
        n=100,
        n0=10,
        alpha=0.001,
        seconds=3.0,
    )


def test_certified_accuracy_is_the_hand_computed_fraction():
    report = _hand_report()
    # correct: samples 0 (r .9), 1 (r .3), 3 (r .5), 5 (r 0); 2 abstains and
    # 4 is wrong.
    radii = np.array([0.0, 0.1, 0.3, 0.31, 0.5, 0.9, 1.0, np.inf])
    expected = np.array([4, 3, 3, 2, 2, 1, 0, 0]) / 6
    np.testing.assert_allclose(report.certified_accuracy(radii), expected)
    assert isinstance(report.certified_accuracy(0.5), float)
    assert report.certified_accuracy(0.5) == pytest.approx(2 / 6)
    assert report.certified_accuracy([[0.0, 0.3]]).shape == (1, 2)
    assert report.seconds_per_sample == pytest.approx(0.5)


def test_certified_accuracy_does_not_increase_with_the_radius():
    smoothed = SmoothedClassifier(_linear_model(), sigma=0.4)
    distances = np.linspace(-0.9, 0.9, 10)
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])  # one label wrong
    report = smoothed.certify(_points_at(distances), labels, n=2000, seed=0, verbose=0)
    curve = report.certified_accuracy(np.linspace(0, 1.5, 31))
    assert np.all(np.diff(curve) <= 0)
    assert curve[0] == pytest.approx(np.mean(report.prediction == labels))
    assert curve[0] < 1.0 and curve[-1] == 0.0


@pytest.mark.parametrize("radii", [-0.1, [0.2, np.nan], "far"])
def test_certified_accuracy_refuses_bad_radii(radii):
    with pytest.raises(vn.InvalidInputError, match="radii"):
        _hand_report().certified_accuracy(radii)


def test_report_round_trips_through_json():
    report = _hand_report()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["format"] == "verinet.SmoothingReport/1"
    assert data["summary"] == {"samples": 6, "abstained": 1, "accuracy": 4 / 6}
    assert data["seconds_per_sample"] == pytest.approx(0.5)
    again = SmoothingReport.from_dict(data)
    for name in ("prediction", "radius", "labels", "top_count", "p_lower"):
        np.testing.assert_array_equal(getattr(again, name), getattr(report, name))
    assert (again.sigma, again.n, again.n0, again.alpha) == (0.25, 100, 10, 0.001)
    assert "abstained=1" in repr(report) and "certified @ 0.5" in report.summary()
    with pytest.raises(vn.InvalidInputError, match="SmoothingReport"):
        SmoothingReport.from_dict({"format": "something else"})


# -- reproducibility ------------------------------------------------------------


def test_a_seed_reproduces_the_noise():
    smoothed = SmoothedClassifier(_linear_model(), sigma=0.5)
    x, y = _points_at([0.05, -0.1, 0.3]), [0, 1, 0]
    first = smoothed.certify(x, y, n0=50, n=3000, seed=7, verbose=0)
    again = smoothed.certify(x, y, n0=50, n=3000, seed=7, verbose=0)
    other = smoothed.certify(x, y, n0=50, n=3000, seed=8, verbose=0)
    np.testing.assert_array_equal(first.top_count, again.top_count)
    np.testing.assert_array_equal(first.radius, again.radius)
    assert not np.array_equal(first.top_count, other.top_count)
    predict = [smoothed.predict(x, n=500, seed=s, verbose=0) for s in (7, 7)]
    np.testing.assert_array_equal(*predict)
    unseeded = [smoothed.certify(x, y, n=3000, verbose=0).top_count for _ in "ab"]
    assert not np.array_equal(*unseeded)


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, -0.5, float("nan"), float("inf"), "0.25"])
def test_sigma_must_be_a_finite_positive_number(sigma):
    with pytest.raises(vn.InvalidInputError, match="sigma must be a finite number > 0"):
        SmoothedClassifier(_linear_model(), sigma=sigma)


def test_model_and_num_classes_are_checked():
    with pytest.raises(vn.InvalidInputError, match="Keras model"):
        SmoothedClassifier(lambda x: x, sigma=0.25)
    with pytest.raises(vn.InvalidInputError, match="num_classes=3, but model"):
        SmoothedClassifier(_linear_model(), sigma=0.25, num_classes=3)
    with pytest.raises(vn.InvalidInputError, match="num_classes must be an int >= 2"):
        SmoothedClassifier(_linear_model(), sigma=0.25, num_classes=1)
    flat = vn.Sequential([layers.Input((3,)), layers.Dense(1)])
    with pytest.raises(vn.InvalidInputError, match="classes >= 2"):
        SmoothedClassifier(flat, sigma=0.25)


def test_inputs_are_checked():
    smoothed = SmoothedClassifier(_linear_model(), sigma=0.25)
    x = _points_at([0.1, 0.2])
    nan = x.copy()
    nan[1, 2] = np.nan
    with pytest.raises(vn.InvalidInputError, match="NaN"):
        smoothed.certify(nan, [0, 0], n=10, verbose=0)
    with pytest.raises(vn.InvalidInputError, match="NaN"):
        smoothed.predict(nan, n=10, verbose=0)
    with pytest.raises(vn.InvalidInputError, match=r"shape \(2, 4\).*\(batch, 3\)"):
        smoothed.certify(np.zeros((2, 4)), [0, 0], n=10, verbose=0)
    with pytest.raises(vn.InvalidInputError, match=r"x\[None\]"):
        smoothed.predict(x[0], n=10, verbose=0)
    with pytest.raises(vn.InvalidInputError, match="vector of 2 integer labels"):
        smoothed.certify(x, [0, 0, 1], n=10, verbose=0)
    with pytest.raises(vn.InvalidInputError, match="labels 0..1"):
        smoothed.certify(x, [0, 2], n=10, verbose=0)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("alpha", 0.0, "alpha must be a finite number > 0 and < 1"),
        ("alpha", 1.0, "alpha must be"),
        ("alpha", 1.5, "alpha must be"),
        ("alpha", float("nan"), "alpha must be"),
        ("n", 0, "n must be an int >= 1"),
        ("n0", 0, "n0 must be an int >= 1"),
        ("n", 10.0, "n must be an int"),
        ("batch_size", 0, "batch_size must be an int >= 1"),
        ("seed", -1, "seed must be an int >= 0"),
    ],
)
def test_options_are_checked(option, value, message):
    smoothed = SmoothedClassifier(_linear_model(), sigma=0.25)
    x = _points_at([0.1, 0.2])
    with pytest.raises(vn.InvalidInputError, match=message):
        smoothed.certify(x, [0, 0], **{"n": 10, option: value}, verbose=0)
    if option != "n0":
        with pytest.raises(vn.InvalidInputError, match=message):
            smoothed.predict(x, **{"n": 10, option: value}, verbose=0)


def test_smoothing_is_public():
    assert "smoothing" in vn.__all__ and vn.smoothing.SmoothedClassifier is (
        SmoothedClassifier
    )
