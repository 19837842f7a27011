"""The perturbation sets as the one threat model: projection, steps and
random points for attacks, exact membership for certificates, and the
per-feature ``Box``, each checked against its definition."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
import torch
from soundness_utils import randomize_weights

import verinet as vn
from verinet import layers
from verinet.bounds.perturbation import Box, L2Ball, LinfBall

SETS = {
    "linf": lambda eps, rr: LinfBall(eps, rr),
    "l2": lambda eps, rr: L2Ball(eps, rr),
}


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (16, 3, 4, 2)).astype(dtype)
    far = x + rng.normal(0, 2.0, x.shape).astype(dtype)
    return torch.from_numpy(x), torch.from_numpy(far), rng


def _norms(delta, norm):
    flat = delta.reshape(len(delta), -1)
    if norm == "linf":
        return np.abs(flat).max(axis=1)
    return np.sqrt((flat**2).sum(axis=1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("input_range", [None, (0.0, 1.0)])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_project_lands_in_the_set_and_keeps_inside_points(norm, input_range, dtype):
    x, far, _ = _data(dtype)
    eps = 0.3 if norm == "linf" else 0.9
    ball = SETS[norm](eps, input_range)
    projected = ball.project(far, x)
    assert projected.dtype == x.dtype
    p, xn = projected.numpy(), x.numpy()
    # Within rounding of the ball (the exact repair is certify's job).
    assert np.all(_norms(p.astype(np.float64) - xn, norm) <= eps * (1 + 1e-6))
    if input_range is not None:
        assert p.min() >= 0.0 and p.max() <= 1.0
    # Far points land on the boundary (without a range: radius exactly eps).
    if input_range is None:
        np.testing.assert_allclose(_norms(p - xn, norm), eps, rtol=1e-5)
    # Points already inside do not move.
    inside = ball.project(projected, x)
    np.testing.assert_allclose(inside.numpy(), p, rtol=0, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_direction_is_the_steepest_unit_ascent(norm):
    _, grad, rng = _data("float64", seed=1)
    ball = SETS[norm](1.0, None)
    d = ball.direction(grad).numpy()
    g = grad.numpy().reshape(len(grad), -1)
    gain = np.sum(g * d.reshape(len(d), -1), axis=1)
    # The dual norm: ||g||_1 for L-inf, ||g||_2 for L2, reached by d.
    dual = np.abs(g).sum(axis=1) if norm == "linf" else np.sqrt((g**2).sum(axis=1))
    np.testing.assert_allclose(gain, dual, rtol=1e-10)
    np.testing.assert_allclose(_norms(d, norm), 1.0, rtol=1e-10)
    # No other unit direction gains more.
    for _ in range(20):
        other = rng.normal(size=g.shape)
        other /= _norms(other, norm)[:, None]
        assert np.all(np.sum(g * other, axis=1) <= gain + 1e-9)


@pytest.mark.parametrize("input_range", [None, (0.0, 1.0)])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_points_and_vertices_lie_in_the_set(norm, input_range):
    x, _, _ = _data("float64", seed=2)
    eps = 0.2
    ball = SETS[norm](eps, input_range)
    generator = torch.Generator().manual_seed(0)
    points = ball.sample(x, generator)
    vertex = ball.vertex(x, generator)
    for p in (points, vertex):  # within float64 rounding of the set
        assert np.all(_norms(p.numpy() - x.numpy(), norm) <= eps * (1 + 1e-12))
        if input_range is not None:
            assert p.min() >= 0.0 and p.max() <= 1.0
    spread = _norms(points.numpy() - x.numpy(), norm)
    assert spread.std() > 0 and spread.max() > eps / 4
    if input_range is None:  # a vertex sits on the boundary
        np.testing.assert_allclose(_norms(vertex.numpy() - x.numpy(), norm), eps)
    # Reproducible from the generator's seed.
    again = ball.sample(x, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(again.numpy(), points.numpy())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_contains_is_exact(norm):
    x = np.zeros((3, 2), dtype=np.float32)
    eps = np.float32(0.1)  # float32(0.1) > 0.1: 0.1 + 1ulp is outside
    ball = SETS[norm](0.1, None)
    just_in = np.array([[0.1, 0.0], [0.0, 0.0], [np.nan, 0.0]], dtype=np.float64)
    assert ball.contains(just_in, x).tolist() == [True, True, False]
    assert not ball.contains(np.array([[eps, 0.0]]), x[:1]).any()
    ranged = SETS[norm](0.1, (0.0, 1.0))
    assert ranged.contains(np.array([[0.05, 0.0]]), x[:1]).all()
    assert not ranged.contains(np.array([[-0.05, 0.0]]), x[:1]).any()


def test_box_equals_the_linf_ball_it_describes():
    """A box ``x ± eps`` per sample gives the L-inf ball's bounds, and a box
    with per-feature widths bounds every point of it."""
    rng = np.random.default_rng(3)
    model = randomize_weights(
        keras.Sequential(
            [layers.Input((6,)), layers.Dense(8), layers.ReLU(), layers.Dense(3)]
        ),
        rng,
    )
    x = rng.uniform(0, 1, (4, 6)).astype("float32")
    graph = vn.bounds.BoundGraph(model)
    xt = keras.ops.convert_to_tensor(x)
    method = vn.bounds.CROWN()
    eps = 0.1
    want = method.bounds(graph, xt, LinfBall(eps))
    got = method.bounds(graph, xt, Box(x - eps, x + eps))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6
        )
    # Per-feature widths: sampled points stay within the bounds.
    lower = x - rng.uniform(0, 0.3, x.shape).astype("float32")
    upper = x + rng.uniform(0, 0.3, x.shape).astype("float32")
    box = Box(lower, upper)
    low, up = (keras.ops.convert_to_numpy(b) for b in method.bounds(graph, xt, box))
    points = box.sample(xt, torch.Generator().manual_seed(1))
    vertex = box.vertex(xt, torch.Generator().manual_seed(2))
    for p in (points, vertex):
        assert box.contains(p.numpy()).all()
        out = keras.ops.convert_to_numpy(model(p))
        assert np.all(out >= low - 1e-5) and np.all(out <= up + 1e-5)
    assert box.epsilon == pytest.approx(float(np.max(upper - lower) / 2))
    far = xt + 5.0
    assert box.contains(box.project(far, xt).numpy()).all()


def test_attacks_use_the_perturbation():
    """An attack's projection is its perturbation's."""
    model = keras.Sequential([layers.Input((4,)), layers.Dense(2)])
    attack = vn.attacks.PGD(model, 0.2, norm="l2", input_range=(0, 1))
    assert isinstance(attack.perturbation, L2Ball)
    assert attack.perturbation.epsilon == 0.2
    assert attack.perturbation.input_range == (0.0, 1.0)


def _cnn(rng):
    model = keras.Sequential(
        [
            layers.Input((5, 5, 2)),
            layers.Conv2D(3, 3, padding="same"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(6),
            layers.ReLU(),
            layers.Dense(3),
        ]
    )
    return randomize_weights(model, rng)


@pytest.mark.parametrize("method", ["ibp", "crown", "crown-ibp", "alpha-crown"])
def test_per_feature_epsilon_and_range_are_sound(method):
    """One radius per feature (zero on some: those stay fixed) and a
    per-feature input range: sampled points and corners of the set stay
    within the bounds, and a constant array equals the scalar."""
    rng = np.random.default_rng(6)
    model = _cnn(rng)
    x = rng.uniform(0.2, 0.8, (3, 5, 5, 2)).astype("float32")
    eps = rng.uniform(0, 0.15, (5, 5, 2)) * (rng.uniform(size=(5, 5, 2)) < 0.6)
    low = np.full((5, 5, 2), 0.0)
    high = np.where(rng.uniform(size=(5, 5, 2)) < 0.5, 0.85, 1.0)
    low_b, up_b = vn.compute_bounds(
        model, x, eps, method=method, input_range=(low, high)
    )
    for corner in (False, True):
        u = rng.uniform(-1, 1, (400, *x.shape))
        if corner:
            u = np.sign(u)
        points = np.clip(x + u * eps, low, high).astype("float32")
        out = keras.ops.convert_to_numpy(model(points.reshape(-1, 5, 5, 2)))
        out = out.reshape(400, *low_b.shape)
        assert np.all(out >= low_b - 1e-5) and np.all(out <= up_b + 1e-5)
    # Constant arrays are the scalar case, bit for bit.
    same = vn.compute_bounds(
        model, x, np.full((5, 5, 2), 0.05), method=method, input_range=(0.0, 1.0)
    )
    scalar = vn.compute_bounds(model, x, 0.05, method=method, input_range=(0.0, 1.0))
    np.testing.assert_array_equal(same[0], scalar[0])
    np.testing.assert_array_equal(same[1], scalar[1])


def test_zero_radius_features_are_fixed():
    """Perturbing one pixel only: tighter than perturbing all, and no radius
    at all gives the output itself."""
    rng = np.random.default_rng(7)
    model = _cnn(rng)
    x = rng.uniform(0, 1, (2, 5, 5, 2)).astype("float32")
    one = np.zeros((5, 5, 2))
    one[2, 2, 0] = 0.3
    low1, up1 = vn.compute_bounds(model, x, one, method="crown")
    low_all, up_all = vn.compute_bounds(model, x, 0.3, method="crown")
    assert np.all(up1 - low1 <= up_all - low_all + 1e-6)
    assert np.mean(up1 - low1) < 0.5 * np.mean(up_all - low_all)
    low0, up0 = vn.compute_bounds(model, x, np.zeros((5, 5, 2)), method="crown")
    out = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(low0, out, atol=1e-5)
    np.testing.assert_allclose(up0, out, atol=1e-5)
    margins = vn.margin_bounds(model, x, [0, 1], one, method="crown")
    assert margins.shape == (2, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": np.zeros((4, 5, 2))}, "broadcast"),
        ({"epsilon": np.full((5, 5, 2), -0.1)}, ">= 0"),
        ({"epsilon": np.full((5, 5, 2), np.nan)}, "NaN or infinite"),
        ({"epsilon": np.full((5, 5, 2), 0.1), "norm": "l2"}, "L-inf"),
        ({"epsilon": 0.1, "input_range": (np.zeros(2), np.full(2, -1.0))}, "low <="),
        ({"epsilon": 0.1, "input_range": (np.full(2, 0.9), np.ones(2))}, "outside"),
    ],
)
def test_per_feature_arguments_are_checked(kwargs, match):
    rng = np.random.default_rng(8)
    model = _cnn(rng)
    x = rng.uniform(0.1, 0.8, (2, 5, 5, 2)).astype("float32")
    with pytest.raises(vn.InvalidInputError, match=match):
        vn.compute_bounds(model, x, **kwargs)


def test_certify_with_a_per_feature_epsilon(tmp_path):
    """certify takes one radius per feature: verified samples hold on the
    per-feature box, counterexamples lie in it, and the report keeps the
    arrays through save/load and its own checks."""
    rng = np.random.default_rng(9)
    model = _cnn(rng)
    x = rng.uniform(0, 1, (24, 5, 5, 2)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x)).argmax(1)
    y[:4] = (y[:4] + 1) % 3  # some misclassified: falsified
    eps = np.zeros((5, 5, 2))
    eps[1:4, 1:4] = 0.04
    report = vn.certify(model, x, y, eps, input_range=(0.0, 1.0), verbose=0)
    assert report.verified.any() and report.falsified.any()
    np.testing.assert_array_equal(report.epsilon, eps)
    report.validate()
    for i in np.flatnonzero(report.verified):
        u = rng.uniform(-1, 1, (256, 5, 5, 2))
        points = np.clip(x[i] + u * eps, 0, 1).astype("float32")
        pred = keras.ops.convert_to_numpy(model(points)).argmax(1)
        assert np.all(pred == y[i])
    attacked = report.falsified & (report.predictions == y)
    adv = report.adversarial_examples[attacked]
    assert np.all(np.abs(adv.astype(np.float64) - x[attacked]) <= eps)
    path = tmp_path / "report.json"
    report.save(path)
    loaded = vn.CertificationReport.load(path)
    np.testing.assert_array_equal(loaded.epsilon, eps)
    assert "per-feature" in loaded.summary()
    # A tampered per-feature radius no longer contains the counterexamples.
    if attacked.any():
        bad = vn.CertificationReport.load(path)
        bad.epsilon = eps * 0
        with pytest.raises(vn.InvalidInputError, match="outside"):
            bad.validate()


@pytest.mark.parametrize("kind", ["linf", "l2", "feature", "box"])
def test_exact_points_are_inside_without_tolerance(kind):
    """Any candidate (far away, NaN) becomes a float32 point that the exact
    membership test accepts; per-feature radii of 0 keep that feature."""
    rng = np.random.default_rng(10)
    x = rng.uniform(0, 1, (32, 3, 4)).astype(np.float32)
    candidate = x + rng.normal(0, 3.0, x.shape).astype(np.float32)
    candidate[0, 0, 0] = np.nan
    eps = rng.uniform(0, 0.1, (3, 4)) * (rng.uniform(size=(3, 4)) < 0.5)
    ball = {
        "linf": LinfBall(0.1 / 3, (0.0, 1.0)),  # 0.1/3: not a float32
        "l2": L2Ball(0.1 / 3, (0.0, 1.0)),
        "feature": LinfBall(eps, (np.zeros((3, 4)), np.full((3, 4), 0.9))),
        "box": Box(np.clip(x - 0.1 / 3, 0, 1), np.clip(x + 0.07, 0, 1)),
    }[kind]
    if kind == "feature":
        x = np.minimum(x, 0.9)
    points, inside = ball.exact_points(candidate, x)
    assert points.dtype == np.float32 and inside.all()
    assert ball.contains(points, x).all()
    if kind == "feature":
        fixed = np.broadcast_to(eps == 0, x.shape)
        np.testing.assert_array_equal(points[fixed], x[fixed])


def test_every_entry_point_takes_a_ball():
    """A LinfBall/L2Ball in place of epsilon carries norm and input range."""
    rng = np.random.default_rng(12)
    model = _cnn(rng)
    x = rng.uniform(0, 1, (4, 5, 5, 2)).astype("float32")
    y = np.array([0, 1, 2, 0])
    for ball, norm, eps in (
        (LinfBall(0.05, (0.0, 1.0)), "linf", 0.05),
        (L2Ball(0.3, (0.0, 1.0)), "l2", 0.3),
    ):
        got = vn.compute_bounds(model, x, ball)
        want = vn.compute_bounds(model, x, eps, norm=norm, input_range=(0.0, 1.0))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(
            vn.margin_bounds(model, x, y, ball),
            vn.margin_bounds(model, x, y, eps, norm=norm, input_range=(0.0, 1.0)),
        )
        report = vn.certify(model, x, y, ball, verbose=0)
        assert report.norm == norm and report.input_range == (0.0, 1.0)
        attack = vn.attacks.PGD(model, ball)
        assert attack.norm == norm and attack.epsilon == eps
    trained = vn.Sequential(
        [layers.Input((5, 5, 2)), layers.Flatten(), layers.Dense(3)]
    )
    trained.compile("adam", robust="ibp", epsilon=L2Ball(0.2, (0.0, 1.0)))
    assert trained._robust.norm == "l2" and trained._robust.input_range == (0.0, 1.0)
    with pytest.raises(vn.InvalidInputError, match="Box"):
        vn.compute_bounds(model, x, Box(x, x + 0.1))
    with pytest.raises(vn.InvalidInputError, match="carries its own"):
        vn.compute_bounds(model, x, LinfBall(0.1), input_range=(0.0, 1.0))
    vn.attacks.PGD(model, L2Ball(0.1), norm="l2")  # the same norm is fine
    with pytest.raises(vn.InvalidInputError, match="carries its own"):
        vn.attacks.PGD(model, LinfBall(0.1), norm="l2")


@pytest.mark.parametrize("per_feature", [False, True])
def test_the_float32_box_holds_every_point_of_the_exact_set(per_feature):
    """The bound engine's box must contain the extreme float32 points that
    ``contains`` (float64, no tolerance) accepts: rounding ``x - eps`` to
    nearest can put the edge inside the set, so it is rounded outward."""
    rng = np.random.default_rng(13)
    x = rng.uniform(0, 1, (2000, 8)).astype(np.float32)
    eps = rng.uniform(0.001, 0.1, (8,)) if per_feature else 0.03
    ball = LinfBall(eps)
    lower, upper = (t.numpy() for t in ball.box(torch.from_numpy(x)))
    assert lower.dtype == np.float32
    low_pts, inside_low = ball.exact_points(x - 1.0, x)
    high_pts, inside_high = ball.exact_points(x + 1.0, x)
    assert inside_low.all() and inside_high.all()
    assert np.all(low_pts >= lower) and np.all(high_pts <= upper)
    # Outward by at most one float32 step.
    assert np.all(np.nextafter(lower, np.float32(np.inf)) >= low_pts)
    assert np.all(np.nextafter(upper, np.float32(-np.inf)) <= high_pts)


def test_regressions_found_in_review(tmp_path):
    """A per-channel radius on image inputs broadcasts in ``contains`` as in
    ``box``; the CLI exports with a per-feature report; TargetedPGD and
    certify run on float64 models; needs_bounds reads on classes."""
    x = np.random.default_rng(14).uniform(0, 1, (3, 2, 2, 3)).astype(np.float32)
    ball = LinfBall(np.array([0.0, 0.1, 0.2]), (0.0, np.ones(3)))
    points = x + np.array([0.0, 0.05, -0.15], dtype=np.float32)
    inside = (points <= 1).all(axis=(1, 2, 3)) & (points >= 0).all(axis=(1, 2, 3))
    np.testing.assert_array_equal(ball.contains(points, x), inside)
    assert not ball.contains(x + np.array([0.01, 0, 0], np.float32), x).any()
    # float64 model through certify's default attack.
    f64 = {"dtype": "float64"}
    model = keras.Sequential(
        [
            layers.Input((4,), dtype="float64"),
            layers.Dense(6, **f64),
            layers.ReLU(**f64),
            layers.Dense(3, **f64),
        ]
    )
    xs = np.random.default_rng(15).uniform(0, 1, (5, 4))
    report = vn.certify(model, xs, [0, 1, 2, 0, 1], 0.05, verbose=0)
    assert len(report.verified) == 5
    assert vn.objectives.Standard.needs_bounds is False
    assert vn.objectives.IBP.needs_bounds is True


def test_cli_export_with_a_per_feature_report(tmp_path, capsys):
    from verinet.cli import main

    rng = np.random.default_rng(16)
    model = vn.Sequential(
        [layers.Input((6,)), layers.Dense(8), layers.ReLU(), layers.Dense(3)]
    )
    x = rng.uniform(0, 1, (8, 6)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x)).argmax(1)
    eps = np.array([0.01, 0, 0, 0, 0, 0.02])
    report = vn.certify(model, x, y, eps, input_range=(0.0, 1.0), verbose=0)
    model.save(tmp_path / "m.keras")
    report.save(tmp_path / "r.json")
    out = tmp_path / "m.onnx"
    rc = main(
        [
            "export",
            str(tmp_path / "m.keras"),
            "--report",
            str(tmp_path / "r.json"),
            "-o",
            str(out),
        ]
    )
    assert rc == 0 and out.exists()
    assert "per-feature [0, 0.02]" in capsys.readouterr().out


# --- Gaps found by mutation testing: each test checks a definition. --------


def _f32_at_or_below(v):
    """The largest float32 <= each float64 ``v`` (from the definition: the
    float32 nearest ``v`` and its neighbours, checked against ``v``)."""
    near = v.astype(np.float32)
    step_down = np.nextafter(near, np.float32(-np.inf))
    return np.where(near.astype(np.float64) <= v, near, step_down)


def _f32_at_or_above(v):
    near = v.astype(np.float32)
    step_up = np.nextafter(near, np.float32(np.inf))
    return np.where(near.astype(np.float64) >= v, near, step_up)


@pytest.mark.parametrize("per_feature", [False, True])
def test_box_edges_are_the_nearest_floats_at_or_beyond_the_exact_edges(per_feature):
    """In float32 the box is ``[x - eps, x + eps]`` (float64) widened to the
    nearest float32 at or beyond each edge, not one step more: an edge that
    is a float32 stays put. In float64 the box is ``x -/+ eps`` itself."""
    rng = np.random.default_rng(20)
    # Half the rows on a dyadic grid (edges exactly float32), half random.
    grid = rng.integers(64, 192, (200, 6)) / 256.0
    x = np.concatenate([grid, rng.uniform(0, 1, (200, 6))]).astype(np.float32)
    eps = np.array([1, 2, 4, 8, 0, 16]) / 64.0 if per_feature else 1 / 16
    lower, upper = (t.numpy() for t in LinfBall(eps).box(torch.from_numpy(x)))
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(lower, _f32_at_or_below(x64 - eps))
    np.testing.assert_array_equal(upper, _f32_at_or_above(x64 + eps))
    np.testing.assert_array_equal(lower[:200], x[:200] - np.float32(eps))
    # float64: the exact edges, per-feature radius included.
    eps = rng.uniform(0, 0.1, 6) if per_feature else 0.1
    lower, upper = (t.numpy() for t in LinfBall(eps).box(torch.from_numpy(x64)))
    assert lower.dtype == np.float64
    np.testing.assert_array_equal(lower, x64 - eps)
    np.testing.assert_array_equal(upper, x64 + eps)


def test_unpack_ball_reads_the_threat_model_off_a_ball():
    """Numbers pass through with the default norm; a ball gives its own
    settings; a Box, or a ball with conflicting settings, is refused with a
    message naming the fix."""
    from verinet.bounds.perturbation import unpack_ball

    assert unpack_ball(0.1) == (0.1, "linf", None)
    assert unpack_ball(0.2, "l2", (0.0, 1.0)) == (0.2, "l2", (0.0, 1.0))
    assert unpack_ball(LinfBall(0.1, (0.0, 1.0))) == (0.1, "linf", (0.0, 1.0))
    assert unpack_ball(L2Ball(0.3)) == (0.3, "l2", None)
    assert unpack_ball(L2Ball(0.3), "l2") == (0.3, "l2", None)
    box_message = (
        "A Box holds the bounds of particular samples; give an LinfBall (a "
        "per-feature epsilon is an array radius) or the bounds directly to "
        "method.bounds."
    )
    with pytest.raises(vn.InvalidInputError, match=f"^{re.escape(box_message)}$"):
        unpack_ball(Box(np.zeros((1, 2)), np.ones((1, 2))))
    for ball, kwargs in (
        (LinfBall(0.1), {"input_range": (0.0, 1.0)}),
        (LinfBall(0.1), {"norm": "l2"}),
        (L2Ball(0.1), {"norm": "linf", "input_range": (0.0, 1.0)}),
    ):
        message = (
            f"epsilon is a {type(ball).__name__}, which carries its own norm and "
            "input_range; do not pass them as well."
        )
        with pytest.raises(vn.InvalidInputError, match=f"^{re.escape(message)}$"):
            unpack_ball(ball, **kwargs)


def test_a_scalar_radius_is_stored_as_a_python_float():
    """Reports and settings store the radius: a numpy or torch scalar
    becomes a plain float (JSON-serializable, same value)."""
    for eps in (np.float32(0.25), np.float64(0.1), 1, torch.tensor(0.5)):
        for ball in (LinfBall(eps), L2Ball(eps, (0.0, 1.0))):
            assert type(ball.epsilon) is float
            assert json.loads(json.dumps(ball.epsilon)) == float(eps)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_box_membership_and_projection_by_hand():
    """``Box.contains`` answers per row (boundary in, NaN or any coordinate
    out is out, the centre is ignored); ``project`` clamps from both sides."""
    lower = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-1, 2]])
    upper = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [-1, 3]])
    box = Box(lower, upper)
    assert box.input_range is None
    points = np.array([[0.5, 0.5], [-0.1, 0.5], [np.nan, 0.5], [1.0, 0.0], [-1.0, 3.0]])
    assert box.contains(points).tolist() == [True, False, False, True, True]
    assert box.contains(points, points + 7.0).tolist() == [1, 0, 0, 1, 1]
    far = torch.tensor([[-5.0, 9.0], [9.0, -5.0], [0.25, 0.75], [0.5, -1], [0, 0]])
    projected = box.project(far.double(), far.double()).numpy()
    want = [[0.0, 1.0], [1.0, 0.0], [0.25, 0.75], [0.5, 0.0], [-1.0, 2.0]]
    np.testing.assert_array_equal(projected, want)


def test_box_exact_points_when_a_box_holds_no_float32():
    """Float64 bounds (as VNN-LIB gives) may hold no float32, e.g.
    ``[0.1, 0.1]``: that row is reported outside and the others are still
    repaired exactly. Points already inside, on the bounds included, are
    kept as they are, whether or not the (ignored) centre lies in the box."""
    lower = np.array([[0.1, 0.0], [0.25, 0.0], [0.25, 0.0]])
    upper = np.array([[0.1, 1.0], [0.75, 0.5], [0.75, 0.5]])
    box = Box(lower, upper)
    x = np.array([[0.1, 0.5], [0.5, 0.25], [2.0, 2.0]], dtype=np.float32)
    candidate = np.array([[0.3, 0.5], [-1.0, 3.0], [0.5, 0.25]], dtype=np.float32)
    points, inside = box.exact_points(candidate, x)
    assert points.dtype == np.float32 and points.shape == x.shape
    assert inside.tolist() == [False, True, True]
    assert box.contains(points).tolist() == [False, True, True]
    np.testing.assert_array_equal(points[1:], [[0.25, 0.5], [0.5, 0.25]])
    assert np.isfinite(points).all()


def _draws(kind, x, seed):
    eps = 0.3
    ball = {
        "linf": LinfBall(eps),
        "l2": L2Ball(eps),
        "box": Box(x - 0.1, x + 0.2),
    }[kind]
    first = ball.sample(x, torch.Generator().manual_seed(seed))
    second = ball.vertex(x, torch.Generator().manual_seed(seed))
    return first, second


@pytest.mark.parametrize("kind", ["linf", "l2", "box"])
def test_random_draws_come_from_the_generator_only(kind):
    """``sample`` and ``vertex`` depend on the generator's seed alone (the
    global torch RNG is neither read nor needed)."""
    x = torch.from_numpy(np.random.default_rng(21).uniform(0, 1, (8, 5)))
    torch.manual_seed(1)
    a = _draws(kind, x, seed=3)
    torch.manual_seed(2)
    b = _draws(kind, x, seed=3)
    c = _draws(kind, x, seed=4)
    for got, again, other in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(got.numpy(), again.numpy())
        assert not np.array_equal(got.numpy(), other.numpy())


def test_random_points_fill_the_linf_ball_and_the_box():
    """L-inf and box samples are uniform per coordinate (both sides of the
    centre, out to the edges); vertices are corners, either side equally
    often."""
    rng = np.random.default_rng(22)
    x = torch.from_numpy(rng.uniform(0, 1, (500, 8)))
    eps = 0.25
    ball = LinfBall(eps)
    u = (ball.sample(x, torch.Generator().manual_seed(0)) - x).numpy() / eps
    assert np.all(np.abs(u) <= 1 + 1e-12)
    assert abs(u.mean()) < 0.03 and abs(np.mean(u > 0) - 0.5) < 0.03
    assert abs(np.mean(np.abs(u) < 0.5) - 0.5) < 0.03  # uniform in |u|
    assert u.min() < -0.99 and u.max() > 0.99
    s = (ball.vertex(x, torch.Generator().manual_seed(1)) - x).numpy() / eps
    np.testing.assert_allclose(np.abs(s), 1.0, rtol=1e-12)
    assert abs(np.mean(s > 0) - 0.5) < 0.03
    low, high = x - 0.1, x + rng.uniform(0.05, 0.3, x.shape)
    box = Box(low, high)
    width = (high - low).numpy()
    t = (box.sample(x, torch.Generator().manual_seed(2)) - low).numpy() / width
    assert t.min() >= 0 and t.max() <= 1 and abs(t.mean() - 0.5) < 0.03
    corner = box.vertex(x, torch.Generator().manual_seed(3)).numpy()
    at_low, at_high = corner == low.numpy(), corner == high.numpy()
    assert np.all(at_low | at_high) and abs(at_high.mean() - 0.5) < 0.03


def test_random_points_fill_the_l2_ball():
    """L2 samples have a direction uniform on the sphere and a radius uniform
    in ``[0, eps]``; vertices are uniform on the sphere itself. Checked by
    the moments of a uniform unit vector in ``k`` dimensions:
    ``E[c_i] = 0``, ``E[c_i^2] = 1/k``, ``E[c_i^4] = 3 / (k (k + 2))``."""
    rng = np.random.default_rng(23)
    k, eps = 12, 0.3
    x = torch.from_numpy(rng.uniform(0, 1, (4000, 3, k // 3)))
    ball = L2Ball(eps)
    delta = (ball.sample(x, torch.Generator().manual_seed(0)) - x).numpy()
    delta = delta.reshape(len(delta), -1)
    radius = np.sqrt((delta**2).sum(axis=1)) / eps
    assert radius.max() <= 1 + 1e-12
    assert abs(np.mean(radius < 0.5) - 0.5) < 0.03
    assert abs(np.mean(radius < 0.9) - 0.9) < 0.03
    for points in (delta, ball.vertex(x, torch.Generator().manual_seed(1)) - x):
        c = np.asarray(points).reshape(len(x), -1)
        c = c / np.sqrt((c**2).sum(axis=1, keepdims=True))
        assert np.all(np.abs(c.mean(axis=0)) < 0.03)
        np.testing.assert_allclose((c**2).mean(axis=0), 1 / k, rtol=0.1)
        np.testing.assert_allclose(np.mean(c**4), 3 / (k * (k + 2)), rtol=0.1)
    # One feature: the ball is an interval, filled uniformly.
    x1 = torch.from_numpy(rng.uniform(0, 1, (4000, 1)))
    u = (ball.sample(x1, torch.Generator().manual_seed(2)) - x1).numpy() / eps
    assert np.all(np.abs(u) <= 1 + 1e-12)
    assert abs(u.mean()) < 0.04 and abs(np.mean(np.abs(u) < 0.5) - 0.5) < 0.03


def test_attack_methods_with_a_per_feature_radius_and_range():
    """A per-feature radius (zero fixes a feature) and per-feature range in
    ``sample``, ``vertex`` and ``project``: every point lies in
    ``[x - eps, x + eps] ∩ [low, high]`` and a vertex is a clipped corner."""
    rng = np.random.default_rng(24)
    eps = np.array([[0.0, 0.1, 0.2], [0.3, 0.05, 0.0]])
    low, high = np.zeros((2, 3)), np.array([[1.0, 0.9, 0.8], [1.0, 1.0, 0.7]])
    ball = LinfBall(eps, (low, high))
    x64 = rng.uniform(0, 0.7, (300, 2, 3))
    x = torch.from_numpy(x64)
    lo, hi = np.maximum(x64 - eps, low), np.minimum(x64 + eps, high)
    far = x + torch.from_numpy(rng.normal(0, 2.0, x.shape))
    for p in (
        ball.sample(x, torch.Generator().manual_seed(0)),
        ball.vertex(x, torch.Generator().manual_seed(1)),
        ball.project(far, x),
    ):
        p = p.numpy()
        assert np.all(p >= lo - 1e-12) and np.all(p <= hi + 1e-12)
        fixed = np.broadcast_to(eps == 0, p.shape)
        np.testing.assert_array_equal(p[fixed], x64[fixed])
    corner = ball.vertex(x, torch.Generator().manual_seed(1)).numpy()
    clipped = np.clip(np.stack([x64 - eps, x64 + eps]), low, high)
    assert np.all(np.isclose(corner, clipped[0]) | np.isclose(corner, clipped[1]))
    projected = ball.project(far, x).numpy()
    np.testing.assert_allclose(projected, np.clip(far.numpy(), lo, hi))


def _devices():
    devices = ["meta"]  # shapes and devices without data: runs on any host
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.mark.parametrize("device", _devices())
def test_attack_methods_keep_the_input_device(device):
    """``sample``, ``vertex``, ``project`` and the float32/float64 ``box``
    return tensors on ``x``'s device, per-feature radius and range included
    (the random draws stay on the CPU generator)."""
    eps = np.array([0.1, 0.0, 0.2])
    balls = [
        LinfBall(0.1, (0.0, 1.0)),
        LinfBall(eps, (np.zeros(3), np.ones(3))),
        L2Ball(0.1, (0.0, 1.0)),
        L2Ball(0.1),
    ]
    x = torch.full((4, 3), 0.5, device=device)
    if device != "meta":  # keras keeps a Box on its own device
        balls.append(Box(x - 0.1, x + 0.1))
    for ball in balls:
        for out in (
            ball.sample(x, torch.Generator().manual_seed(0)),
            ball.vertex(x, torch.Generator().manual_seed(0)),
            ball.project(x + 1.0, x),
        ):
            assert out.device == x.device and out.shape == x.shape
    for dtype in (torch.float32, torch.float64):
        for ball in (LinfBall(eps), LinfBall(0.1)):
            for edge in ball.box(x.to(dtype)):
                assert edge.device == x.device and edge.dtype == dtype


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("linf", "sample"),
        ("linf", "vertex"),
        ("box", "sample"),
        ("box", "vertex"),
        ("l2", "vertex"),
        ("l2", "sample"),
    ],
)
def test_random_draws_use_the_cpu_generator_whatever_the_default_device(kind, method):
    """The generator is a CPU one: draws come from it even when torch's
    default device is another (``meta`` stands in for an accelerator), and
    give the same points as with the CPU default."""
    x = torch.from_numpy(np.random.default_rng(25).uniform(0, 1, (6, 4)))
    ball = {"linf": LinfBall(0.1), "l2": L2Ball(0.1), "box": Box(x - 0.1, x + 0.1)}
    draw = getattr(ball[kind], method)
    want = draw(x, torch.Generator().manual_seed(0))
    with torch.device("meta"):
        got = draw(x, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attack_methods_compute_in_the_input_dtype(dtype):
    """Half-precision inputs give half-precision points (the attack methods
    work in the tensors' own dtype), still in the set up to that rounding."""
    x = torch.from_numpy(np.random.default_rng(26).uniform(0.2, 0.8, (6, 5)))
    x = x.to(dtype)
    tol = 1e-2
    for ball, norm in (
        (LinfBall(0.1, (0.0, 1.0)), "linf"),
        (L2Ball(0.1, (0.0, 1.0)), "l2"),
        (Box(x - 0.1, x + 0.1), "linf"),
    ):
        for out in (
            ball.sample(x, torch.Generator().manual_seed(0)),
            ball.vertex(x, torch.Generator().manual_seed(0)),
            ball.project(x + 1.0, x),
        ):
            assert out.dtype == dtype
            delta = (out.double() - x.double()).numpy()
            assert np.all(_norms(delta, norm) <= 0.1 + tol)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("kind", ["linf", "l2", "box"])
def test_membership_and_repair_are_quiet_and_keep_inside_points(kind):
    """Points already in the set (the clean input itself, e.g. a failed
    attack's) come back unchanged, with no warnings; ``contains`` rejects
    huge or infinite float64 points without overflow warnings."""
    rng = np.random.default_rng(27)
    x = rng.uniform(0, 1, (6, 4)).astype(np.float32)
    inner = np.clip(x + rng.uniform(-0.01, 0.01, x.shape), 0, 1).astype(np.float32)
    ball = {
        "linf": LinfBall(0.1, (0.0, 1.0)),
        "l2": L2Ball(0.1, (0.0, 1.0)),
        "box": Box(np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1)),
    }[kind]
    for candidate in (x, inner):
        points, inside = ball.exact_points(candidate.copy(), x)
        assert inside.all()
        np.testing.assert_array_equal(points, candidate)
    huge = x.astype(np.float64)
    huge[0, 0], huge[1, :] = 1e200, -1e300
    huge[2, 1], huge[3, 3] = np.inf, -np.inf
    assert ball.contains(huge, x).tolist() == [False] * 4 + [True] * 2
