"""Counterexample projection, exactly: ``_project`` moves an attack's output
into the perturbation set and ``_f32_inside`` rounds into a box.

Every expected point is derived by hand on the float32 grid (written as bit
patterns where the decimal is not representable), and membership is checked
on the float64 values of the float32 points with no tolerance. The points
must also be as close to the candidate as the float32 grid allows: a
projection that stays inside the set but moves further than needed loses
counterexamples.
"""

import verinet as vn  # noqa: I001 - verinet before keras

import importlib
import time

import keras
import numpy as np
import pytest

from verinet import layers as L
from verinet.attacks import FGSM, PGD, TargetedPGD
from verinet.attacks.pgd import _LOSSES
from verinet.bounds.api import make_perturbation
from verinet.bounds.graph import BoundGraph
from verinet.bounds.graph import bound_model
from verinet.certify.certify import _f32_inside, _make_attack, _project
from verinet.certify.integrity import model_weights_sha256
from verinet.certify.report import CertificationReport
from verinet.errors import InvalidInputError, SoundnessError, UnsupportedLayerError

certify_module = importlib.import_module("verinet.certify.certify")


def _bits(*words):
    """float32 values from their IEEE-754 bit patterns."""
    return np.array(words, dtype=np.uint32).view(np.float32)


# float32 neighbours of decimals that float32 cannot hold.
BELOW_07, ABOVE_07, ABOVE_07_2 = _bits(0x3F333333, 0x3F333334, 0x3F333335)
BELOW_03_2, BELOW_03, ABOVE_03 = _bits(0x3E999998, 0x3E999999, 0x3E99999A)
BELOW_08, ABOVE_08 = _bits(0x3F4CCCCC, 0x3F4CCCCD)
HALF_UP = _bits(0x3F000001)[0]  # 0.5 + 2**-24
ONE_AND_HALF_DOWN = _bits(0x3FBFFFFF)[0]  # 1.5 - 2**-23


def test_bit_patterns_are_the_neighbours_they_claim_to_be():
    assert float(BELOW_07) < 0.7 < float(ABOVE_07) < float(ABOVE_07_2)
    assert float(BELOW_03_2) < float(BELOW_03) < 0.3 < float(ABOVE_03)
    assert float(BELOW_08) < 0.8 < float(ABOVE_08)
    assert np.float32(0.7) == BELOW_07 and np.float32(0.3) == ABOVE_03
    assert np.float32(0.8) == ABOVE_08
    assert float(HALF_UP) == 0.5 + 2.0**-24
    assert float(ONE_AND_HALF_DOWN) == 1.5 - 2.0**-23


def _inside(points, x, eps, norm, box):
    """Exact membership, written independently of verinet."""
    p = points.astype(np.float64).reshape(len(x), -1)
    d = p - x.astype(np.float64).reshape(len(x), -1)
    if norm == "linf":
        ok = np.abs(d).max(axis=1) <= eps
    else:
        ok = np.sqrt((d * d).sum(axis=1)) <= eps
    if box is not None:
        ok &= (p.min(axis=1) >= box[0]) & (p.max(axis=1) <= box[1])
    return ok & np.isfinite(p).all(axis=1)


def _run(candidate, x, eps, norm, box=None):
    x = np.asarray(x, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    points, inside = _project(candidate, x, make_perturbation(eps, norm, box, x))
    assert points.dtype == np.float32 and points.shape == x.shape
    assert inside.dtype == bool and inside.shape == (len(x),)
    np.testing.assert_array_equal(inside, _inside(points, x, eps, norm, box))
    return points, inside


def _same(actual, expected):
    """Bit-for-bit equal float32 arrays (so 0.0 and 1e-45 differ)."""
    expected = np.asarray(expected, dtype=np.float32)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


# --- _f32_inside ---------------------------------------------------------------------


def test_f32_inside_keeps_representable_bounds_and_rounds_others_inward():
    # Bounds float32 holds exactly: the clip lands on them, not one ulp in.
    _same(_f32_inside(np.array([-1.0, 0.5, 2.0]), 0.25, 0.75), [0.25, 0.5, 0.75])
    # 0.7 rounds down and 0.8 rounds up in float32: both are stepped inside.
    got = _f32_inside(np.array([-1.0, 0.75, 2.0]), 0.7, 0.8)
    _same(got, [ABOVE_07, 0.75, BELOW_08])
    # Values already strictly inside are only rounded to nearest.
    _same(_f32_inside(np.array([0.3]), 0.0, 1.0), [ABOVE_03])
    _same(_f32_inside(np.array([0.7]), 0.0, 1.0), [BELOW_07])


# --- L-infinity ----------------------------------------------------------------------


@pytest.mark.parametrize("box", [None, (-4.0, 4.0)])
def test_linf_candidates_inside_the_ball_are_kept_exactly(box):
    x = np.array([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # Inside, on the lower face, on the upper face, at a corner.
    candidate = np.array([[0.625, -1.25, 2.25, -0.125], [0.75, 1.25, 0.75, 1.25]])
    points, inside = _run(candidate, x, 0.25, "linf", box)
    assert inside.all()
    _same(points, candidate)


def test_linf_clips_to_the_ball_on_both_sides():
    x = np.array([[0.5, 0.5, -2.0, -2.0]])
    candidate = np.array([[-3.0, 3.0, -2.75, 0.0]])
    points, inside = _run(candidate, x, 0.25, "linf")
    assert inside.all()
    _same(points, [[0.25, 0.75, -2.25, -1.75]])


def test_linf_clips_to_the_input_range_on_both_sides():
    # The range is tighter than the ball; its bounds are float32 values.
    x = np.array([[0.125, 0.875, 0.5]])
    points, inside = _run([[-3.0, 3.0, 0.75]], x, 0.5, "linf", (0.0, 1.0))
    assert inside.all()
    _same(points, [[0.0, 1.0, 0.75]])
    # Bounds float32 cannot hold: the nearest float32 inside the range.
    x = np.array([[0.75, 0.75, 0.75]])
    points, inside = _run([[-3.0, 3.0, 0.78125]], x, 0.5, "linf", (0.7, 0.8))
    assert inside.all()
    _same(points, [[ABOVE_07, BELOW_08, 0.78125]])


@pytest.mark.parametrize("box", [None, (0.0, 2.0)])
def test_linf_repairs_coordinates_that_float64_rounding_left_outside(box):
    # 1 - eps = 0.5 + 2**-54 exactly, which float64 rounds down to 0.5, and
    # 1 + eps rounds up to 1.5. Both are float32 values just outside the
    # ball; the nearest float32 inside is one float32 ulp towards x.
    eps = 0.5 - 2.0**-54
    assert 1.0 - eps == 0.5 and 1.0 + eps == 1.5
    x = np.array([[1.0, 1.0, 2.0**-54, 0.25, 1.75]], dtype=np.float32)
    # Coordinates 2-4 need no repair and must not move: 0.5 lies at distance
    # exactly eps from 2**-54, 0.0 and 2.0 (the range's bounds when there is
    # one) are inside.
    candidate = np.array([[0.0, 2.0, 0.5, 0.125, 2.0]])
    points, inside = _run(candidate, x, eps, "linf", box)
    assert inside.all()
    _same(points, [[HALF_UP, ONE_AND_HALF_DOWN, 0.5, 0.125, 2.0]])
    if box is not None:
        points, inside = _run([[0.0, 2.0, 0.5, -3.0, 9.0]], x, eps, "linf", box)
        assert inside.all()
        _same(points, [[HALF_UP, ONE_AND_HALF_DOWN, 0.5, 0.0, 2.0]])


def test_linf_repair_moves_only_the_rows_and_coordinates_outside():
    eps = 0.5 - 2.0**-54
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    candidate = np.array([[0.0, 0.25], [0.375, 2.0], [-0.25, 0.4375]])
    points, inside = _run(candidate, x, eps, "linf")
    assert inside.all()
    _same(points, [[HALF_UP, 0.25], [0.375, ONE_AND_HALF_DOWN], [-0.25, 0.4375]])


# --- L2 ----------------------------------------------------------------------------


@pytest.mark.parametrize("box", [None, (-2.0, 2.0)])
def test_l2_candidates_inside_the_ball_are_kept_exactly(box):
    x = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    # Distances 0.6124 (more than half of eps) and 0.625 (|(0.375, 0.5)|).
    candidate = np.array([[0.75, 0.25, 1.0], [0.0, 0.375, 0.5]], dtype=np.float32)
    points, inside = _run(candidate, x, 1.0, "l2", box)
    assert inside.all()
    _same(points, candidate)
    points, inside = _run(candidate[1:], x[1:], 0.625, "l2", box)  # on the sphere
    assert inside.all()
    _same(points, candidate[1:])


def test_l2_scales_outside_candidates_onto_the_sphere():
    # Radii and directions chosen so the projection is a float32 point.
    x = np.array([[0.0, 0.0], [1.0, -1.0]])
    candidate = np.array([[6.0, 8.0], [7.0, 7.0]])  # |(6, 8)| = 10
    points, inside = _run(candidate, x, 5.0, "l2")
    assert inside.all()
    _same(points, [[3.0, 4.0], [4.0, 3.0]])
    # A candidate less than 1 away but outside the ball.
    points, inside = _run([[0.375, 0.5]], [[0.0, 0.0]], 0.3125, "l2")
    assert inside.all()
    _same(points, [[0.1875, 0.25]])


def test_l2_clips_to_the_range_before_scaling():
    x = np.array([[0.5, 0.5], [0.5, 0.5]])
    # Clipped to (0, 1) the candidates lie inside the ball: nothing to scale.
    points, inside = _run([[-10.0, 1.0], [0.0, 11.0]], x, 1.0, "l2", (0.0, 1.0))
    assert inside.all()
    _same(points, [[0.0, 1.0], [0.0, 1.0]])


def test_l2_range_bounds_are_kept_or_rounded_inward():
    # Representable bounds are reached exactly ...
    x = np.array([[0.5], [0.5]])
    points, inside = _run([[-3.0], [3.0]], x, 1.0, "l2", (0.0, 1.0))
    assert inside.all()
    _same(points, [[0.0], [1.0]])
    # ... others give the nearest float32 inside the range (not the clean
    # input, which lies one float32 ulp further in).
    points, inside = _run([[-5.0]], [[ABOVE_07_2]], 1.0, "l2", (0.7, 1.0))
    assert inside.all()
    _same(points, [[ABOVE_07]])
    points, inside = _run([[5.0]], [[BELOW_03_2]], 1.0, "l2", (0.0, 0.3))
    assert inside.all()
    _same(points, [[BELOW_03]])


@pytest.mark.parametrize("k", [10**6, 10**5, 10**4, 10**3, 100])
def test_l2_shrinks_no_further_than_rounding_needs(k):
    # eps = (k + 0.55) float32 ulps of [1, 2). x + eps rounds up to k + 1
    # ulps, outside the ball; the best point is x + k ulps, which rounding
    # reaches once the step shrinks by 0.05 ulp, i.e. by a factor
    # 0.05 / k: 5e-8 for k = 10**6, ..., 5e-4 for k = 100.
    ulp = 2.0**-23
    eps = (k + 0.55) * ulp
    x = np.array([[1.0], [-1.0]])
    points, inside = _run([[2.0], [-2.0]], x, eps, "l2")
    assert inside.all()
    _same(points, [[1.0 + k * ulp], [-1.0 - k * ulp]])


def test_l2_falls_back_to_the_clean_input_when_no_shrink_helps():
    # eps is 0.75 float32 ulp of [1, 2): every shrunk step still rounds to
    # x +- 1 ulp, outside the ball, so the only float32 point on the ray
    # inside it is x itself.
    eps = 0.75 * 2.0**-23
    x = np.array([[1.0], [-1.0]])
    points, inside = _run([[2.0], [-2.0]], x, eps, "l2")
    assert inside.all()
    _same(points, x)


def test_l2_rounding_outside_is_shrunk_back_close_to_the_sphere():
    x = np.zeros((2, 2))
    # (0.6, 0.8) rounds up in float32 to a point of norm > 1.
    exact = np.array([[0.6, 0.8], [0.8, 0.6]])
    assert not _inside(exact.astype(np.float32), x, 1.0, "l2", None).any()
    points, inside = _run(exact * 5, x, 1.0, "l2")
    assert inside.all()
    np.testing.assert_allclose(points, exact, rtol=1e-6, atol=0)


# --- candidates that are not numbers ------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("box", [None, (0.0, 1.0)])
def test_non_finite_candidates_fall_back_to_the_clean_input(norm, box):
    # A NaN or infinite coordinate has no usable value: it takes the clean
    # input's, and the finite coordinates are projected as usual.
    x = np.array([[0.5, 0.25, 0.75, 0.5], [0.5, 0.5, 0.5, 0.5]])
    candidate = np.array(
        [[np.nan, np.inf, -np.inf, 0.625], [np.nan, np.nan, np.nan, np.nan]],
        dtype=np.float32,
    )
    points, inside = _run(candidate, x, 0.25, norm, box)
    assert inside.all()
    _same(points, [[0.5, 0.25, 0.75, 0.625], [0.5, 0.5, 0.5, 0.5]])


# --- which attack certify builds ------------------------------------------------------


def _line(weights=(1.0, -1.0), bias=(0.0, 0.0)):
    """Logits ``(w0 * x + b0, w1 * x + b1)`` of a scalar input."""
    model = vn.Sequential([L.Input((1,)), L.Dense(2)])
    model.set_weights(
        [np.array([weights], dtype=np.float32), np.array(bias, dtype=np.float32)]
    )
    return model


def test_make_attack_defaults_and_options():
    model = _line()
    attack = _make_attack("pgd", model, 0.25, "l2", (0.0, 1.0), None)
    assert type(attack) is TargetedPGD
    assert attack.model is model and attack.epsilon == 0.25
    assert attack.norm == "l2" and attack.input_range == (0.0, 1.0)
    assert (attack.targets, attack.restarts, attack.steps) == (3, 2, 10)
    attack = _make_attack("PGD", model, 0.25, "l2", (0.0, 1.0), {"steps": 4})
    assert type(attack) is TargetedPGD and attack.steps == 4
    attack = _make_attack("fgsm", model, 0.5, "l2", (-1.0, 1.0), {"loss": "margin"})
    assert type(attack) is FGSM and attack.loss is _LOSSES["margin"]
    assert attack.norm == "l2" and attack.input_range == (-1.0, 1.0)
    assert attack.epsilon == 0.5 and attack.model is model
    assert _make_attack(None, model, 0.5, "linf", None, None) is None
    own = object()
    assert _make_attack(own, model, 0.5, "linf", None, None) is own


@pytest.mark.parametrize("option", [{"loss": "ce"}, {"random_start": False}])
def test_untargeted_options_build_pgd_with_its_former_defaults(option):
    model = _line()
    attack = _make_attack("pgd", model, 0.25, "l2", (0.0, 1.0), option)
    assert type(attack) is PGD
    assert attack.model is model and attack.epsilon == 0.25
    assert attack.norm == "l2" and attack.input_range == (0.0, 1.0)
    assert (attack.steps, attack.restarts) == (30, 2)
    assert attack.loss is _LOSSES[option.get("loss", "margin")]
    assert attack.random_start is option.get("random_start", True)
    attack = _make_attack("pgd", model, 0.25, "linf", None, {**option, "steps": 5})
    assert type(attack) is PGD and (attack.steps, attack.restarts) == (5, 2)


def test_unknown_attack_names_the_argument():
    with pytest.raises(InvalidInputError, match=r"^Unknown attack 'bogus'; choose"):
        _make_attack("bogus", _line(), 0.1, "linf", None, None)


def test_certify_hands_the_threat_model_and_options_to_the_attack(monkeypatch):
    built = []
    real = certify_module._make_attack

    def spy(*args):
        built.append(real(*args))
        return built[-1]

    monkeypatch.setattr(certify_module, "_make_attack", spy)
    x = np.array([[0.25], [0.75]], dtype=np.float32)
    vn.certify(
        _line(), x, [0, 0], 0.125, norm="l2", input_range=(0.0, 1.0), verbose=0,
        attack_options={"steps": 3},
    )  # fmt: skip
    (attack,) = built
    assert type(attack) is TargetedPGD and attack.steps == 3
    assert attack.norm == "l2" and attack.input_range == (0.0, 1.0)
    assert attack.epsilon == 0.125


def test_stock_keras_models_are_bounded_through_their_converted_twin():
    stock = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    )
    with pytest.raises(UnsupportedLayerError):
        BoundGraph(stock)
    twin, graph = bound_model(stock)
    assert twin is not stock
    layers_of_twin = [
        layer for layer in twin.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    assert [node.rule for node in graph.nodes[1:]] == layers_of_twin
    x = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(twin(x)), keras.ops.convert_to_numpy(stock(x))
    )
    native = _line()
    assert bound_model(native)[0] is native
    # compute_bounds and margin_bounds take the stock model as certify does.
    for method in ("ibp", "crown"):
        got = vn.compute_bounds(stock, x, 0.1, method=method)
        want = vn.compute_bounds(twin, x, 0.1, method=method)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(
            vn.margin_bounds(stock, x, [0, 1], 0.1, method=method),
            vn.margin_bounds(twin, x, [0, 1], 0.1, method=method),
        )


# --- certify's checks, verdicts and report ------------------------------------------


def test_certify_checks_x_against_the_model_and_the_input_range():
    model = _line()
    with pytest.raises(InvalidInputError, match="has shape"):
        vn.certify(model, np.zeros((2, 3), np.float32), [0, 0], 0.1, verbose=0)
    with pytest.raises(InvalidInputError, match="outside input_range"):
        vn.certify(model, [[0.5], [1.5]], [0, 0], 0.1, input_range=(0, 1), verbose=0)


def _batchnorm_model():
    """Class 0 in inference (moving statistics: identity), class 1 when the
    batch statistics are used instead (training mode)."""
    model = vn.Sequential(
        [L.Input((1,)), L.BatchNormalization(epsilon=0.0), L.Dense(2)]
    )
    bn = model.layers[0]
    bn.set_weights([np.ones(1), np.zeros(1), np.zeros(1), np.ones(1)])
    model.layers[1].set_weights([np.array([[1.0, 0.0]]), np.array([0.0, 2.0])])
    return model


def test_certify_runs_the_model_in_inference_mode():
    model = _batchnorm_model()
    x = np.array([[4.0], [5.0], [6.0]], dtype=np.float32)  # logits (x, 2)
    before = model_weights_sha256(model)
    report = vn.certify(model, x, [0, 0, 0], 0.25, method="ibp", verbose=0)
    np.testing.assert_array_equal(report.predictions, [0, 0, 0])
    assert report.verified.all() and not report.falsified.any()
    assert model_weights_sha256(model) == before == report.weights_sha256


def test_counterexamples_are_judged_in_inference_mode():
    model = _batchnorm_model()
    # Samples 1 and 3 can reach x < 2 within eps = 1.5; 0 and 2 cannot.
    x = np.array([[6.0], [3.0], [7.0], [2.5]], dtype=np.float32)
    report = vn.certify(model, x, [0, 0, 0, 0], 1.5, method="ibp", verbose=0)
    np.testing.assert_array_equal(report.falsified, [False, True, False, True])
    index, adv = report.counterexamples()
    np.testing.assert_array_equal(index, [1, 3])
    logits = keras.ops.convert_to_numpy(model(adv, training=False))
    assert np.all(logits.argmax(axis=1) == 1)


def test_report_records_the_threat_model_inputs_and_time():
    model = _line()
    x = np.array([[0.25], [0.5], [-0.5]], dtype=np.float32)
    start = time.perf_counter()
    report = vn.certify(
        model, x, [0, 0, 0], 0.125, input_range=(-1.0, 1.0), norm="l2", verbose=0
    )
    elapsed = time.perf_counter() - start
    assert report.input_range == (-1.0, 1.0) and report.norm == "l2"
    assert report.epsilon == 0.125 and report.method == "crown"
    assert report.inputs is not None and report.inputs.dtype == np.float32
    np.testing.assert_array_equal(report.inputs, x)
    assert 0.0 < report.seconds <= elapsed
    np.testing.assert_array_equal(report.falsified, [False, False, True])


def test_soundness_error_names_the_samples_proven_and_broken(monkeypatch):
    # A broken bound method that "proves" every sample but sample 1; the
    # attack (a full FGSM step of 5 against logits (x, -x)) breaks all 14.
    x = np.linspace(0.125, 1.0, 14, dtype=np.float32)[:, None]

    def wrong_bounds(model, xb, *args, **kwargs):
        low = np.ones((len(xb), 2))
        low[xb[:, 0] == x[1, 0]] = -1.0
        return low, None

    monkeypatch.setattr(certify_module, "bound_batches", wrong_bounds)
    message = (
        "Soundness bug: ibp verified samples [0, 2, 3, 4, 5, 6, 7, 8, 9, 10] but the "
        "attack found adversarial examples for them. Please report it with the "
        "model and inputs."
    )
    with pytest.raises(SoundnessError) as info:
        vn.certify(_line(), x, np.zeros(14, int), 5.0, "ibp", "fgsm", verbose=0)
    assert str(info.value) == message


def test_an_inconsistent_report_is_a_soundness_error(monkeypatch):
    def refuse(report):
        raise InvalidInputError("made up")

    monkeypatch.setattr(CertificationReport, "validate", refuse)
    with pytest.raises(SoundnessError) as info:
        vn.certify(_line(), [[0.5]], [0], 0.1, verbose=0)
    assert str(info.value) == (
        "verinet bug: certify produced an inconsistent report (made up). "
        "Please report it with the model and inputs."
    )
    assert isinstance(info.value.__cause__, InvalidInputError)


def test_samples_are_bounded_batch_size_at_a_time(monkeypatch):
    sizes = []
    real = certify_module.bound_batches

    def spy(model, xb, *args, **kwargs):
        sizes.append(len(xb))
        return real(model, xb, *args, **kwargs)

    monkeypatch.setattr(certify_module, "bound_batches", spy)
    x = np.linspace(-1, 1, 300, dtype=np.float32)[:, None]
    y = (x[:, 0] < 0).astype(int)
    model = _line()
    vn.certify(model, x, y, 0.01, "ibp", None, verbose=0)
    vn.certify(model, x[:7], y[:7], 0.01, "ibp", None, batch_size=3, verbose=0)
    vn.certify(model, x[:7], y[:7], 0.01, "ibp", None, batch_size=None, verbose=0)
    assert sizes == [256, 44, 3, 3, 1, 7]


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({}, False),  # auto, one batch
        ({"batch_size": 3}, True),  # auto, two batches
        ({"verbose": 1}, True),
        ({"verbose": 0, "batch_size": 2}, False),
    ],
)
def test_progress_bar(capsys, kwargs, shown):
    x = np.linspace(-1, 1, 5, dtype=np.float32)[:, None]
    vn.certify(_line(), x, (x[:, 0] < 0).astype(int), 0.1, "ibp", None, **kwargs)
    out = capsys.readouterr().out
    if not shown:
        assert out == ""
    else:  # it shows at once (0 done), then all 5, counted in samples
        assert "0/5" in out and "5/5" in out and "/sample" in out
        assert out.index("0/5") < out.index("5/5") and "1/5" not in out
