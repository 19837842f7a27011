"""alpha-CROWN: sound for any slope, never looser than CROWN, tighter on
average, and accepted wherever a bound method is."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from soundness_utils import (
    assert_contains,
    check_soundness,
    empirical_extremes,
    random_inputs,
    randomize_weights,
)

import verinet as vn
from verinet import layers
from verinet.bounds.alpha import AlphaCROWN, SlopeStore
from verinet.bounds.methods import (
    _spec_or_identity,
    backward_pass,
    crown_pass,
    output_pass,
)
from verinet.bounds.perturbation import LinfBall


def _mlp(slope=0.0):
    act = layers.ReLU if slope == 0.0 else (lambda: layers.LeakyReLU(slope))
    return keras.Sequential(
        [
            layers.Input((5,)),
            layers.Dense(12),
            act(),
            layers.Dense(12),
            act(),
            layers.Dense(4),
        ]
    )


def _cnn():
    return keras.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Conv2D(4, 3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(6, 3, padding="same"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(10),
            layers.ReLU(),
            layers.Dense(3),
        ]
    )


@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_slopes_are_sound_and_out_of_range_ones_are_clipped(slope, seed):
    """Any slope in [a, 1] is sound: draw them at random (many far outside
    the range, which the rule must clip) and check against a search."""
    rng = np.random.default_rng(seed)
    model = randomize_weights(_mlp(slope), rng, scale=2.0)
    x = random_inputs((5,), 3, rng)
    epsilon = 0.4
    ext = empirical_extremes(model, x, epsilon, n_samples=256, seed=seed)
    graph = vn.bounds.BoundGraph(model)
    xt = keras.ops.convert_to_tensor(x)
    ball = LinfBall(epsilon)
    with torch.no_grad():
        bounds = crown_pass(graph, xt, ball)
        spec = _spec_or_identity(bounds[graph.output][0], None)
        alphas = {}
        for i, node in enumerate(graph.nodes):
            if getattr(node.rule, "piecewise_linear", False):
                shape = (3, 4, *bounds[i][0].shape[1:])
                draw = rng.uniform(-1.0, 2.0, size=(2, *shape)).astype(np.float32)
                alphas[i] = tuple(keras.ops.convert_to_tensor(d) for d in draw)
        low, up = backward_pass(
            graph, graph.output, spec, spec, bounds, xt, ball, alphas=alphas
        )
        crown_low, _ = backward_pass(graph, graph.output, spec, spec, bounds, xt, ball)
    assert_contains(
        keras.ops.convert_to_numpy(low),
        keras.ops.convert_to_numpy(up),
        ext,
        f"random slopes, leak {slope}",
    )
    # The slopes were used: the lower bounds differ from CROWN's own lines.
    gap = keras.ops.convert_to_numpy(low) - keras.ops.convert_to_numpy(crown_low)
    assert np.abs(gap).max() > 1e-3


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_each_side_uses_its_own_slopes(slope):
    """``alpha = (for the lower bound, for the upper bound)``: the lower
    bound depends on the first slopes only, the upper on the second, also
    when both sides share one specification object."""
    rng = np.random.default_rng(4)
    model = randomize_weights(_mlp(slope), rng, scale=2.0)
    xt = keras.ops.convert_to_tensor(random_inputs((5,), 3, rng))
    graph = vn.bounds.BoundGraph(model)
    ball = LinfBall(0.4)
    with torch.no_grad():
        bounds = crown_pass(graph, xt, ball)
        spec = _spec_or_identity(bounds[graph.output][0], None)
        draws = {}
        for i, node in enumerate(graph.nodes):
            if getattr(node.rule, "piecewise_linear", False):
                shape = (3, 4, *bounds[i][0].shape[1:])
                draws[i] = [
                    keras.ops.convert_to_tensor(
                        rng.uniform(slope, 1.0, size=shape).astype(np.float32)
                    )
                    for _ in range(2)
                ]

        def run(first, second):
            alphas = {i: (d[first], d[second]) for i, d in draws.items()}
            out = backward_pass(
                graph, graph.output, spec, spec, bounds, xt, ball, alphas=alphas
            )
            return [keras.ops.convert_to_numpy(b) for b in out]

        low_ab, up_ab = run(0, 1)
        low_aa, up_aa = run(0, 0)
        low_bb, up_bb = run(1, 1)
    np.testing.assert_array_equal(low_ab, low_aa)
    np.testing.assert_array_equal(up_ab, up_bb)
    assert np.abs(low_aa - low_bb).max() > 1e-3  # the slopes matter
    assert np.abs(up_aa - up_bb).max() > 1e-3


def _separable(c, d, slope=0.0):
    """``y_i = c_i * act(x_i) + d_i * x_i``: each output is a function of one
    input, so its extremes over a box are exact: the least and greatest of
    its values at ``l_i``, ``u_i`` and ``0`` (the only kink)."""
    k = len(c)
    inp = layers.Input((k,))
    act = layers.ReLU() if slope == 0.0 else layers.LeakyReLU(slope)
    a = layers.Dense(k, use_bias=False)(act(inp))
    b = layers.Dense(k, use_bias=False)(inp)
    model = keras.Model(inp, layers.Add()([a, b]))
    model.layers[2].set_weights([np.diag(c)])
    model.layers[3].set_weights([np.diag(d)])
    return model


def _exact_extremes(c, d, low, up, slope):
    def f(t):
        return c * np.maximum(t, slope * t) + d * t

    points = np.stack([f(low), f(up), f(np.clip(0.0, low, up))])
    return points.min(0), points.max(0)


@pytest.mark.parametrize("slope", [0.0, 0.3])
def test_every_clipped_slope_is_sound_on_exact_one_dimensional_pieces(slope):
    """Slopes drawn in [-1, 2] (clipped by the rule into [a, 1]) against the
    exact extremes: a slope range off by 1% at either end is caught."""
    rng = np.random.default_rng(11)
    k, batch, eps = 48, 8, 1.0
    c = rng.uniform(-2, 2, k).astype(np.float32)
    d = rng.uniform(-3, 3, k).astype(np.float32)
    model = _separable(c, d, slope)
    # Mostly unstable neurons, a third stable (their line is exact, whatever
    # the slopes say).
    x = rng.uniform(-0.9, 0.9, (batch, k)).astype(np.float32)
    x[:, ::3] = rng.choice([-1.0, 1.0], (batch, k // 3 + (k % 3 > 0))) * rng.uniform(
        1.05, 2.0, (batch, k // 3 + (k % 3 > 0))
    )
    stable = np.abs(x) >= eps
    exact_lo, exact_hi = _exact_extremes(c, d, x - eps, x + eps, slope)
    graph = vn.bounds.BoundGraph(model)
    xt = keras.ops.convert_to_tensor(x)
    ball = LinfBall(eps)
    (relu,) = [
        i
        for i, n in enumerate(graph.nodes)
        if getattr(n.rule, "piecewise_linear", False)
    ]
    with torch.no_grad():
        bounds = crown_pass(graph, xt, ball)
        spec = _spec_or_identity(bounds[graph.output][0], None)
        for _ in range(4):
            draw = rng.uniform(-1.0, 2.0, size=(2, batch, k, k)).astype(np.float32)
            draw[:, :, :, ::3] = rng.choice([-1.0, 2.0], size=draw[:, :, :, ::3].shape)
            alphas = {relu: tuple(keras.ops.convert_to_tensor(a) for a in draw)}
            low, up = backward_pass(
                graph, graph.output, spec, spec, bounds, xt, ball, alphas=alphas
            )
            low, up = keras.ops.convert_to_numpy(low), keras.ops.convert_to_numpy(up)
            assert np.all(low <= exact_lo + 1e-5), (low - exact_lo).max()
            assert np.all(up >= exact_hi - 1e-5), (exact_hi - up).min()
            np.testing.assert_allclose(low[stable], exact_lo[stable], atol=1e-5)
            np.testing.assert_allclose(up[stable], exact_hi[stable], atol=1e-5)
    # Optimized slopes reach the exact extremes where a line can (CROWN's
    # rule of thumb does not), and never cross them.
    a_low, a_up = vn.compute_bounds(model, x, eps, method=AlphaCROWN(iterations=40))
    c_low, c_up = vn.compute_bounds(model, x, eps, method="crown")
    assert np.all(a_low <= exact_lo + 1e-5) and np.all(a_up >= exact_hi - 1e-5)
    gap_alpha = np.mean(exact_lo - a_low) + np.mean(a_up - exact_hi)
    gap_crown = np.mean(exact_lo - c_low) + np.mean(c_up - exact_hi)
    assert gap_alpha < 0.7 * gap_crown


@pytest.mark.parametrize("seed", [0, 1])
def test_optimized_bounds_are_sound_never_looser_and_tighter_on_average(seed):
    rng = np.random.default_rng(seed)
    for model, shape, eps in ((_mlp(), (5,), 0.3), (_cnn(), (8, 8, 1), 0.1)):
        randomize_weights(model, rng, scale=1.5)
        x = random_inputs(shape, 4, rng, (0.0, 1.0))
        _, bounds = check_soundness(
            model,
            x,
            eps,
            input_range=(0.0, 1.0),
            methods=("crown", AlphaCROWN(iterations=15)),
            n_samples=256,
            seed=seed,
        )
        (c_low, c_up), (a_low, a_up) = bounds.values()
        assert np.all(a_low >= c_low) and np.all(a_up <= c_up)
        assert np.mean(a_up - a_low) < 0.995 * np.mean(c_up - c_low)


@pytest.mark.parametrize("seed", [0, 1])
def test_specification_bounds_are_sound(seed):
    """``C @ f`` with as many rows as outputs (so bounds of the wrong quantity
    would still broadcast) and outputs shifted far from the spec's values:
    every bound, including the IBP bound alpha-CROWN intersects with, must
    be of ``C @ f``."""
    rng = np.random.default_rng(10 + seed)
    model = randomize_weights(_mlp(), rng, scale=1.5)
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel, bias + 5.0])  # outputs near +5, -f near -5
    x = random_inputs((5,), 4, rng, (0.0, 1.0))
    n = bias.shape[0]
    C = np.tile(-np.eye(n, dtype=np.float32), (len(x), 1, 1))
    C[:, 0] += rng.standard_normal((len(x), n)).astype(np.float32)
    check_soundness(
        model,
        x,
        0.3,
        input_range=(0.0, 1.0),
        methods=("crown", AlphaCROWN(iterations=5), AlphaCROWN(intermediate=False)),
        C=C,
        n_samples=256,
        seed=seed,
    )


def test_random_slopes_for_hidden_layers_in_patches_form_are_sound():
    """Every slope variable (output and hidden layers, dense and patches
    windows) set at random in [-1, 2]: the bounds still hold."""
    rng = np.random.default_rng(9)
    model = randomize_weights(_cnn(), rng, scale=1.5)
    x = random_inputs((8, 8, 1), 3, rng, (0.0, 1.0))
    eps, ball = 0.15, LinfBall(0.15, (0.0, 1.0))
    ext = empirical_extremes(model, x, eps, input_range=(0.0, 1.0), seed=9)
    method = AlphaCROWN()
    graph = vn.bounds.BoundGraph(model)
    xt = keras.ops.convert_to_tensor(x)
    plan, store = {}, SlopeStore()
    with torch.no_grad():
        reference = crown_pass(graph, xt, ball, plan=plan)
        assert any(len(graph.nodes[i].rule.output.shape) == 4 for i in plan)
        spec = _spec_or_identity(reference[graph.output][0], None)
        for trial in range(3):
            bounds = method._hidden_bounds(
                graph, xt, ball, reference, plan, set(plan), store
            )
            low, up = output_pass(
                graph,
                spec,
                True,
                True,
                bounds,
                xt,
                ball,
                alphas=store.for_pass("output"),
            )
            if trial:
                assert_contains(
                    keras.ops.convert_to_numpy(low),
                    keras.ops.convert_to_numpy(up),
                    ext,
                    f"random hidden slopes, trial {trial}",
                )
            for p in store.params:  # the first pass created them
                p.copy_(torch.empty_like(p).uniform_(-1.0, 2.0))
    kinds = {type(v[0].data).__name__ for v in store.slopes.values()}
    assert len(store.params) > 6 and kinds == {"Tensor"}
    assert any(p.dim() == 5 for p in store.params)  # patches windows


def test_hidden_layer_slopes_tighten_and_a_small_budget_skips_them():
    rng = np.random.default_rng(4)
    model = randomize_weights(_cnn(), rng, scale=1.5)
    x = random_inputs((8, 8, 1), 4, rng, (0.0, 1.0))
    kwargs = dict(input_range=(0.0, 1.0))
    output_only = vn.compute_bounds(
        model, x, 0.1, method=AlphaCROWN(intermediate=False), **kwargs
    )
    full = vn.compute_bounds(model, x, 0.1, method=AlphaCROWN(), **kwargs)
    assert np.mean(full[1] - full[0]) < 0.99 * np.mean(output_only[1] - output_only[0])
    # A budget that can hold no hidden layer's graph: the output's slopes only.
    with vn.bounds.memory_limit(0.01):
        squeezed = vn.compute_bounds(model, x, 0.1, method=AlphaCROWN(), **kwargs)
    # Equal up to float rounding (row chunks change the order of sums, and
    # the optimizer's steps carry it); optimizing hidden slopes moves the
    # widths by over 1% (above).
    np.testing.assert_allclose(squeezed[0], output_only[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(squeezed[1], output_only[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["cnn", "leaky_mlp"])
def test_zero_iterations_is_crown(kind):
    """The slopes start at CROWN's own (LeakyReLU's floor included)."""
    rng = np.random.default_rng(5)
    model, shape = (_cnn(), (8, 8, 1)) if kind == "cnn" else (_mlp(0.2), (5,))
    model = randomize_weights(model, rng, scale=1.5)
    x = random_inputs(shape, 3, rng, (0.0, 1.0))
    crown = vn.compute_bounds(model, x, 0.1, method="crown", input_range=(0, 1))
    alpha = vn.compute_bounds(
        model, x, 0.1, method=AlphaCROWN(iterations=0), input_range=(0, 1)
    )
    np.testing.assert_array_equal(alpha[0], crown[0])
    np.testing.assert_array_equal(alpha[1], crown[1])


def test_both_sides_tighten_and_the_best_iterate_is_kept():
    """Lower and upper bounds are each optimized. With steps so large that
    the iterates overshoot, the best bound seen (from CROWN's start on) is
    what comes back, never a later, looser one."""
    rng = np.random.default_rng(8)
    model = randomize_weights(_mlp(), rng, scale=1.5)
    x = random_inputs((5,), 8, rng, (0.0, 1.0))
    kwargs = dict(input_range=(0.0, 1.0))
    c_low, c_up = vn.compute_bounds(model, x, 0.3, method="crown", **kwargs)
    # Output slopes only: each side tightens through its own slopes.
    own = AlphaCROWN(iterations=10, intermediate=False)
    a_low, a_up = vn.compute_bounds(model, x, 0.3, method=own, **kwargs)
    assert np.mean(a_low - c_low) > 1e-3 and np.mean(c_up - a_up) > 1e-3
    wild = AlphaCROWN(iterations=6, lr=50.0)
    w_low, w_up = vn.compute_bounds(model, x, 0.3, method=wild, **kwargs)
    assert np.all(w_low >= c_low) and np.all(w_up <= c_up)


def test_training_weights_get_no_gradients():
    """The slopes are optimized; the model's weights are left alone."""
    rng = np.random.default_rng(6)
    model = randomize_weights(_mlp(), rng, scale=2.0)
    before = [w.copy() for w in model.get_weights()]
    vn.compute_bounds(model, random_inputs((5,), 2, rng), 0.3, method="alpha-crown")
    for variable in model.trainable_variables:
        assert variable.value.grad is None
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_alpha_crown_everywhere_a_method_is_taken(tmp_path):
    rng = np.random.default_rng(7)
    model = randomize_weights(_cnn(), rng, scale=1.0)
    x = random_inputs((8, 8, 1), 6, rng, (0.0, 1.0))
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    crown = vn.margin_bounds(model, x, y, 0.03, method="crown", input_range=(0, 1))
    alpha = vn.margin_bounds(
        model, x, y, 0.03, method="alpha-crown", input_range=(0, 1)
    )
    assert np.all(alpha >= crown)
    options = dict(input_range=(0.0, 1.0), verbose=0)
    report = vn.certify(model, x, y, 0.03, method="alpha-crown", **options)
    assert report.method == "alpha-crown"
    base = vn.certify(model, x, y, 0.03, method="crown", **options)
    assert report.verified.sum() >= base.verified.sum()
    vn.export_onnx(model, tmp_path / "m.onnx")
    on_file = vn.certify_onnx(
        tmp_path / "m.onnx", x, y, 0.03, method="alpha-crown", **options
    )
    np.testing.assert_array_equal(on_file.verified, report.verified)


def test_verify_with_alpha_crown(tmp_path):
    model = vn.Sequential(
        [layers.Input((2,)), layers.Dense(2), layers.ReLU(), layers.Dense(2)]
    )
    model.layers[0].set_weights([np.eye(2), np.zeros(2)])
    model.layers[2].set_weights([np.eye(2), np.array([1.0, 0.0])])
    model(np.zeros((1, 2), dtype="float32"))
    vn.export_onnx(model, tmp_path / "n.onnx")
    prop = tmp_path / "p.vnnlib"
    prop.write_text(
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
        "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
        "(assert (>= X_0 -1))\n(assert (<= X_0 0.5))\n"
        "(assert (>= X_1 -1))\n(assert (<= X_1 0.5))\n"
        "(assert (<= Y_0 Y_1))\n"
    )
    assert vn.verify(tmp_path / "n.onnx", prop, method="alpha-crown") == "unsat"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(iterations=-1),
        dict(iterations=2.5),
        dict(lr=0.0),
        dict(lr=float("nan")),
        dict(lr_decay=1.5),
        dict(lr_decay=0.0),
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(vn.InvalidInputError):
        AlphaCROWN(**kwargs)


def test_unknown_method_lists_alpha_crown():
    model = _mlp()
    with pytest.raises(vn.InvalidInputError, match="alpha-crown"):
        vn.compute_bounds(model, np.zeros((1, 5), np.float32), 0.1, method="beta")


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_node_bounds_hold_every_sampled_activation_and_tighten_crowns(kind):
    """``AlphaCROWN.node_bounds`` (where branch and bound starts): every
    hidden value of points sampled in the ball (random corners included,
    where a ReLU net's extremes lie) is inside its node's bounds, which are
    never looser than CROWN's and tighter somewhere."""
    rng = np.random.default_rng(11)
    model = _mlp() if kind == "mlp" else _cnn()
    model = randomize_weights(model, rng, scale=1.5)
    shape = model.inputs[0].shape[1:]
    x = random_inputs(shape, 1, rng, (0.0, 1.0)).astype(np.float64)
    eps = 0.15
    _, graph = vn.bounds.graph.bound_model(model)
    ball = LinfBall(eps, (0.0, 1.0))
    with vn.bounds.precision.float64_promotion():
        xt = keras.ops.convert_to_tensor(x, dtype="float64")
        with torch.no_grad():
            crown = crown_pass(graph, xt, ball)
        alpha = AlphaCROWN(iterations=20).node_bounds(graph, xt, ball)
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    n = 4000
    corners = np.where(rng.uniform(size=(n // 2, *shape)) < 0.5, lo, hi)
    inside = rng.uniform(lo, hi, size=(n // 2, *shape))
    points = np.concatenate([corners, inside]).astype(np.float32)
    tighter = 0
    for i, ((a_low, a_up), (c_low, c_up)) in enumerate(zip(alpha, crown, strict=True)):
        a_low, a_up, c_low, c_up = (
            keras.ops.convert_to_numpy(t).reshape(-1)
            for t in (a_low, a_up, c_low, c_up)
        )
        assert np.all(a_low >= c_low - 1e-9) and np.all(a_up <= c_up + 1e-9), i
        tighter += int(np.sum(a_low > c_low + 1e-6) + np.sum(a_up < c_up - 1e-6))
        if i == 0:
            continue
        values = (
            keras.Sequential(model.layers[:i])(points)
            if i < len(model.layers) + 1
            else model(points)
        )
        values = keras.ops.convert_to_numpy(values).reshape(n, -1)
        assert np.all(values >= a_low - 1e-5), i
        assert np.all(values <= a_up + 1e-5), i
    assert tighter > 0
