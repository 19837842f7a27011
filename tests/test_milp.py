"""Exact MILP verification: agrees with activation-pattern enumeration, its
optimum is attained by a real input, and certify(method="milp"/"auto")
settles samples soundly."""

import keras
import numpy as np
import pytest
from exact_reference import exact_min

import verinet as vn
from verinet import layers as L
from verinet.bounds.graph import bound_model
from verinet.bounds.perturbation import LinfBall
from verinet.complete import MILPEncoding
from verinet.complete.stage import node_bounds64


def _mlp(widths, slope, seed, inputs=2, outputs=3):
    keras.utils.set_random_seed(seed)
    layers = [L.Input((inputs,))]
    for w in widths:
        layers += [L.Dense(w), L.LeakyReLU(slope) if slope else L.ReLU()]
    return vn.Sequential([*layers, L.Dense(outputs)])


def _exact_min(model, slope, low, high, c):
    return exact_min(model, slope, low, high, c)


def _encoding(model, x, eps):
    _, graph = bound_model(model)
    return graph, MILPEncoding(graph, node_bounds64(graph, x, LinfBall(eps)))


@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_milp_optimum_equals_activation_pattern_enumeration(slope, seed):
    model = _mlp((4, 3), slope, seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1, 2))
    eps = 0.8
    graph, enc = _encoding(model, x, eps)
    assert enc.binaries > 0  # the case exercises the big-M rows
    for j in (1, 2):
        c = np.zeros(3)
        c[0], c[j] = 1.0, -1.0
        exact = _exact_min(model, slope, x[0] - eps, x[0] + eps, c)
        result = enc.solve(c)
        assert result.status == "optimal"
        assert result.lower <= exact  # sound
        assert result.value == pytest.approx(exact, abs=1e-6)
        assert exact - result.lower < 1e-3  # and tight


def _attained_and_sound(model, x, eps, c, enc):
    """The MILP value is ``c · f`` at its own point (attained), and no sampled
    or PGD-found input goes below its proven lower bound (sound)."""
    result = enc.solve(c)
    assert result.status == "optimal"
    point = result.point.reshape(x.shape)
    assert np.abs(point - x).max() <= eps + 1e-7  # HiGHS feasibility tolerance
    at_point = keras.ops.convert_to_numpy(model(point.astype("float32")))[0] @ c
    assert at_point == pytest.approx(result.value, abs=1e-4)
    rng = np.random.default_rng(0)
    samples = x + rng.uniform(-eps, eps, (4000, *x.shape[1:]))
    corners = x + eps * rng.choice([-1.0, 1.0], (4000, *x.shape[1:]))
    for pts in (samples, corners):
        out = keras.ops.convert_to_numpy(model(pts.astype("float32")))
        assert (out @ c).min() >= result.lower - 1e-5
    assert result.value - result.lower < 1e-3 * (1 + abs(result.value))


def _cnn(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(3, (3, 2), padding="same")(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    skip = h
    h = L.Conv2D(3, 3, padding="same")(h)
    h = L.LeakyReLU(0.1)(h)
    h = L.Add()([h, skip])
    h = L.MaxPooling2D(2, padding="same", strides=(2, 1))(h)
    h = L.AveragePooling2D(2)(h)
    h = L.Flatten()(h)
    out = L.Dense(3)(L.ReLU()(L.Dense(5)(h)))
    model = vn.Model(inp, out)
    bn = model.layers[2]
    bn.set_weights(
        [
            np.array([1.5, 0.5, 2.0]),
            np.array([0.1, -0.2, 0.3]),
            np.array([0.2, -0.1, 0.0]),
            np.array([0.5, 2.0, 1.0]),
        ]
    )
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_milp_on_conv_pool_residual_network_is_attained_and_sound(seed):
    model = _cnn(seed)
    x = np.random.default_rng(seed).uniform(0, 1, (1, 6, 6, 2))
    eps = 0.015
    _, enc = _encoding(model, x, eps)
    assert enc.binaries > 0
    for c in (np.array([1.0, -1.0, 0.0]), np.array([0.0, -1.0, 1.0])):
        _attained_and_sound(model, x, eps, c, enc)


def test_max_pooling_windows_are_exact():
    """A lone max pool over a box: the MILP max of one output is the
    largest upper end in its window (hand-computed)."""
    model = vn.Sequential(
        [L.Input((3, 3, 1)), L.MaxPooling2D(2, strides=1), L.Flatten()]
    )
    x = np.arange(9, dtype=float).reshape(1, 3, 3, 1) / 10
    _, enc = _encoding(model, x, 0.05)
    for k, window in enumerate(
        [(0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8)]
    ):
        c = np.zeros(4)
        c[k] = -1.0  # maximize output k
        result = enc.solve(c)
        assert -result.value == pytest.approx(max(window) / 10 + 0.05, abs=1e-7)
        c[k] = 1.0  # minimize it: the max of the lower ends
        assert enc.solve(c).value == pytest.approx(max(window) / 10 - 0.05, abs=1e-7)


def test_max_pooling_of_dependent_inputs_is_exact():
    """``max(x, -x) = |x|`` through a pool whose two inputs move together:
    over x in [-0.5, 1] the MILP finds max 1 and min 0 (by hand)."""
    dense = L.Dense(2, use_bias=False)
    model = vn.Sequential(
        [
            L.Input((1,)),
            dense,
            L.Reshape((1, 2, 1)),
            L.MaxPooling2D((1, 2)),
            L.Flatten(),
        ]
    )
    dense.set_weights([np.array([[1.0, -1.0]])])
    _, enc = _encoding(model, np.array([[0.25]]), 0.75)
    assert enc.solve([-1.0]).value == pytest.approx(-1.0, abs=1e-7)
    assert enc.solve([1.0]).value == pytest.approx(0.0, abs=1e-7)


def _trained_tiny(seed=0):
    model = _mlp((5, 4), 0.0, seed, inputs=2, outputs=3)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (60, 2)).astype("float32")
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    return model, x, y


def test_certify_milp_settles_every_sample_and_agrees_with_enumeration():
    model, x, y = _trained_tiny()
    logits = keras.ops.convert_to_numpy(model(x))
    y = logits.argmax(axis=1)  # correct clean predictions: bounds decide
    eps = 0.15
    report = vn.certify(
        model, x[:12], y[:12], eps, method="milp", verbose=0, timeout=30
    )
    assert not report.unknown.any()
    settled = report.extra["settled_by"]
    assert set(settled) <= {"crown", "milp", "attack"}
    for i in range(12):
        others = [j for j in range(3) if j != y[i]]
        exact = {
            j: _exact_min(
                model, 0.0, x[i] - eps, x[i] + eps, np.eye(3)[y[i]] - np.eye(3)[j]
            )
            for j in others
        }
        for j in others:  # every proven margin is a true lower bound
            assert report.margin_lower[i, j] <= exact[j] + 1e-6
        worst = min(exact.values())
        if abs(worst) > 1e-4:  # else too close to call in float32
            assert report.verified[i] == (worst > 0), (i, worst, settled[i])
    assert report.verified.any() and report.falsified.any()
    assert "milp" in report.extra["stage_seconds"]
    index, advs = report.counterexamples()
    preds = keras.ops.convert_to_numpy(model(advs)).argmax(axis=1)
    assert np.all(preds != y[index])
    assert np.all(np.abs(advs - x[index]) <= eps)


def test_auto_settles_what_crown_leaves_unknown():
    model, x, y = _trained_tiny(1)
    y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)
    eps = 0.2
    crown = vn.certify(model, x, y, eps, method="crown", attack=None, verbose=0)
    auto = vn.certify(
        model, x, y, eps, method="auto", attack=None, verbose=0, timeout=30
    )
    assert crown.unknown.sum() > 0
    assert auto.unknown.sum() == 0
    assert np.all(auto.verified[crown.verified])  # never loses a proof
    stages = auto.extra["settled_by"]
    assert set(stages) <= {"ibp", "crown", "alpha-crown", "milp"}
    assert "milp" in stages
    assert list(auto.extra["stage_seconds"]) == [
        "attack",
        "ibp",
        "crown",
        "alpha-crown",
        "milp",
    ]
    # A sample any stage verified is never broken by a later, stronger attack.
    strong = vn.attacks.PGD(model, eps, steps=100, restarts=8)
    index = np.flatnonzero(auto.verified)
    adv = strong.perturb(x[index], y[index])
    assert np.abs(adv - x[index]).max() <= eps + 1e-6
    preds = keras.ops.convert_to_numpy(model(adv)).argmax(axis=1)
    np.testing.assert_array_equal(preds, y[index])


def test_time_budget_spent_leaves_samples_unknown():
    model, x, y = _trained_tiny(1)
    y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)
    report = vn.certify(
        model, x, y, 0.2, method="milp", attack=None, verbose=0, time_budget=1e-9
    )
    crown = vn.certify(model, x, y, 0.2, method="crown", attack=None, verbose=0)
    np.testing.assert_array_equal(report.verified, crown.verified)
    assert report.unknown.sum() == crown.unknown.sum() > 0
    assert all(
        report.extra["settled_by"][i] is None for i in np.flatnonzero(report.unknown)
    )


def test_per_sample_timeout_gives_unknown_not_verified():
    keras.utils.set_random_seed(3)
    model = vn.Sequential(
        [
            L.Input((20,)),
            L.Dense(60),
            L.ReLU(),
            L.Dense(60),
            L.ReLU(),
            L.Dense(60),
            L.ReLU(),
            L.Dense(4),
        ]
    )
    x = np.random.default_rng(3).uniform(0, 1, (2, 20)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)
    report = vn.certify(
        model, x, y, 0.3, method="milp", attack=None, verbose=0, timeout=0.05
    )
    assert report.unknown.all()


def test_milp_refusals_are_clear():
    model, x, y = _trained_tiny()
    with pytest.raises(vn.InvalidInputError, match="L2 ball is not linear"):
        vn.certify(model, x[:2], y[:2], 0.1, method="milp", norm="l2", verbose=0)
    with pytest.raises(vn.InvalidInputError, match="timeout and time_budget"):
        vn.certify(model, x[:2], y[:2], 0.1, method="crown", timeout=5, verbose=0)
    with pytest.raises(vn.InvalidInputError, match="timeout"):
        vn.certify(model, x[:2], y[:2], 0.1, method="milp", timeout=-1, verbose=0)
    smooth = vn.Sequential(
        [L.Input((2,)), L.Dense(4), L.Sigmoid(name="squash"), L.Dense(3)]
    )
    with pytest.raises(vn.UnsupportedLayerError, match="'squash'.*ReLU, LeakyReLU"):
        vn.certify(smooth, x[:2], y[:2], 0.1, method="milp", verbose=0)
    # auto on a smooth network: the bound stages only
    report = vn.certify(smooth, x[:4], y[:4], 0.1, method="auto", verbose=0)
    assert "milp" not in report.extra["stage_seconds"]


def test_a_solver_candidate_the_model_does_not_confirm_is_dropped(monkeypatch):
    """A MILP 'counterexample' counts only if the float32 model misclassifies
    it: a solver answer pointing at the correctly classified clean input
    leaves the sample unknown."""
    from verinet.complete import milp as milp_module

    model, x, y = _trained_tiny()
    y = keras.ops.convert_to_numpy(model(x)).argmax(axis=1)

    def fake_solve(self, c, time_limit=None):
        point = np.asarray(x[0], dtype=np.float64)
        return milp_module.MILPResult(-np.inf, -1.0, point, "optimal", 0.0)

    monkeypatch.setattr(milp_module.MILPEncoding, "solve", fake_solve)
    report = vn.certify(model, x[:1], y[:1], 0.5, method="milp", attack=None, verbose=0)
    assert report.unknown[0] and not report.falsified[0]
