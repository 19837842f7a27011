"""Certified training losses against numpy computations written out by hand.

The IBP and CROWN-IBP objectives' losses are recomputed here from the
weights: interval arithmetic through Dense / BatchNormalization / ReLU, the
worst-case logits ``-(lower bound of z_y - z_j)`` with the last Dense folded
into the margin (as IBP with a specification does), the clean and robust
cross-entropies, and their ``kappa`` / ``beta`` blends. The networks' ReLUs
are stable on the whole input range (each unit is either always active or
always inactive), so CROWN's bound of a linear function of the logits is the
exact optimum over the box, which numpy gets from the sign of each
coefficient. IBP's layer-by-layer interval is looser, so any swapped weight
moves the loss.
"""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

import verinet as vn
from verinet import layers
from verinet.bounds.graph import BoundGraph
from verinet.objectives.base import Context

EPS = 0.1
RANGE = (0.0, 1.0)
IN, HIDDEN, CLASSES, BATCH = 4, 6, 3, 5


def logsumexp(z):
    top = z.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))[..., 0]


def cross_entropy(logits, y):
    """Per-sample sparse cross-entropy on logits."""
    return logsumexp(logits) - logits[np.arange(len(y)), y]


def stable_weights(rng):
    """First-layer weights whose ReLUs are stable on ``[0, 1]^IN``: units
    0, 2, 4 always active (weights >= 0, bias > 0), 1, 3, 5 always inactive
    (weights <= 0, bias < 0)."""
    active = np.arange(HIDDEN) % 2 == 0
    magnitude = rng.uniform(0.2, 1.0, (IN, HIDDEN))
    W1 = np.where(active, magnitude, -magnitude)
    B1 = np.where(active, rng.uniform(0.1, 0.5, HIDDEN), -rng.uniform(0.1, 0.5, HIDDEN))
    W2 = rng.standard_normal((HIDDEN, CLASSES))
    B2 = rng.standard_normal(CLASSES)
    return [w.astype(np.float32) for w in (W1, B1, W2, B2)]


def mlp(weights, bn=False):
    stack = [layers.Input((IN,)), layers.Dense(HIDDEN)]
    if bn:
        stack.append(layers.BatchNormalization())
    stack += [layers.ReLU(), layers.Dense(CLASSES)]
    model = vn.Sequential(stack)
    W1, B1, W2, B2 = weights
    model.layers[0].set_weights([W1, B1])
    model.layers[-1].set_weights([W2, B2])
    return model


def data(rng):
    x = rng.uniform(0.0, 1.0, (BATCH, IN)).astype(np.float32)
    x[0, :2] = (0.0, 1.0)  # on the faces: the range clips the box
    y = np.array([0, 1, 2, 0, 1])
    return x, y


def box(x):
    return np.clip(x - EPS, *RANGE), np.clip(x + EPS, *RANGE)


def affine_interval(low, up, W, b):
    """Exact interval of ``v @ W + b`` over the box ``[low, up]``."""
    centre, radius = (low + up) / 2, (up - low) / 2
    mid = centre @ W + b
    rad = radius @ np.abs(W)
    return mid - rad, mid + rad


def margin_lower_ibp(h_low, h_up, W2, B2, y):
    """IBP lower bounds of ``z_y - z_j`` with the last Dense folded in:
    ``(W2[:, y] - W2[:, j]) · h`` over the box of ReLU outputs ``h``."""
    rows = []
    for i, label in enumerate(y):
        w = W2[:, label][:, None] - W2  # (HIDDEN, CLASSES)
        bias = B2[label] - B2
        low = np.sum(np.where(w > 0, w * h_low[i][:, None], w * h_up[i][:, None]), 0)
        rows.append(low + bias)
    return np.array(rows)


def affine_net(W1, B1, W2, B2):
    """With the ReLUs stable the network is ``x @ M + c`` on the range."""
    active = (np.arange(HIDDEN) % 2 == 0).astype(np.float64)
    M = (W1 * active) @ W2
    c = (B1 * active) @ W2 + B2
    return M, c


def box_min(coeff, low, up):
    """``min coeff · x`` over ``[low, up]`` (per row of ``coeff``)."""
    return np.sum(np.where(coeff > 0, coeff * low, coeff * up), axis=-1)


def reference_parts(weights, x, y):
    """numpy: clean logits, IBP margin lower bounds, exact margin minima."""
    W1, B1, W2, B2 = (w.astype(np.float64) for w in weights)
    x = x.astype(np.float64)
    low, up = box(x)
    h_low, h_up = affine_interval(low, up, W1, B1)
    assert np.all((h_low > 0) | (h_up < 0))  # every ReLU stable
    ibp = margin_lower_ibp(np.maximum(h_low, 0), np.maximum(h_up, 0), W2, B2, y)
    M, c = affine_net(W1, B1, W2, B2)
    logits = x @ M + c
    exact = np.empty_like(ibp)
    for i, label in enumerate(y):
        coeff = (M[:, label][:, None] - M).T  # (CLASSES, IN)
        exact[i] = box_min(coeff, low[i], up[i]) + c[label] - c
    return logits, ibp, exact, (M, c, low, up)


def make_context(
    model_like,
    graph,
    y,
    training=False,
    reduction="sum_over_batch_size",
    epsilon_target=2 * EPS,
):
    ce = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=reduction
    )
    return Context(
        model=model_like,
        epsilon=EPS,
        epoch=0.0,
        norm="linf",
        input_range=RANGE,
        loss=lambda pred: ce(y, pred),
        training=training,
        graph=graph,
        epsilon_target=epsilon_target,
    )


def objective_loss(objective, model, model_like, x, y, y_pred, **kw):
    graph = BoundGraph(model)
    context = make_context(model_like, graph, y, **kw)
    loss, _ = objective.compute(
        context,
        keras.ops.convert_to_tensor(x),
        keras.ops.convert_to_tensor(y),
        keras.ops.convert_to_tensor(y_pred.astype(np.float32)),
    )
    loss = keras.ops.convert_to_numpy(loss)
    return float(loss) if loss.ndim == 0 else loss


def test_numpy_reference_is_the_model():
    """The reference's clean logits are the model's, its exact margin minima
    are reached at box vertices, and IBP is strictly looser than them."""
    rng = np.random.default_rng(0)
    weights = stable_weights(rng)
    model = mlp(weights)
    x, y = data(rng)
    logits, ibp, exact, (M, c, low, up) = reference_parts(weights, x, y)
    out = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-5)
    for i, label in enumerate(y):
        for j in range(CLASSES):
            coeff = M[:, label] - M[:, j]
            vertex = np.where(coeff > 0, low[i], up[i])[None].astype(np.float32)
            z = keras.ops.convert_to_numpy(model(vertex))[0]
            assert z[label] - z[j] == pytest.approx(exact[i, j], abs=1e-5)
    off_diagonal = np.arange(CLASSES)[None] != y[:, None]
    assert np.all(ibp[off_diagonal] < exact[off_diagonal] - 1e-3)


@pytest.mark.parametrize("kappa", [0.8, 0.3, None])
def test_ibp_loss_is_kappa_clean_plus_one_minus_kappa_robust(kappa):
    """``kappa · CE(clean) + (1 - kappa) · CE(-margin lower bounds)``.

    ``kappa=None`` follows the default schedule: 1 - 0.5 · epsilon / target,
    here 0.75 with the target at 2 epsilon.
    """
    rng = np.random.default_rng(1)
    weights = stable_weights(rng)
    model = mlp(weights)
    x, y = data(rng)
    logits, ibp, _, _ = reference_parts(weights, x, y)
    clean = cross_entropy(logits, y).mean()
    robust = cross_entropy(-ibp, y).mean()  # worst-case logits: -lower
    assert abs(robust - clean) > 0.1
    weight = 0.75 if kappa is None else kappa
    expected = weight * clean + (1 - weight) * robust
    model_like = SimpleNamespace()
    got = objective_loss(
        vn.objectives.IBP(kappa=kappa), model, model_like, x, y, logits
    )
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("beta", [0.3, 1.0, None])
def test_crown_ibp_margins_are_beta_crown_plus_one_minus_beta_ibp(beta):
    """With a loss other than Keras's logits cross-entropy, CROWN-IBP blends
    the margin lower bounds: ``beta · CROWN-IBP + (1 - beta) · IBP``; here
    CROWN-IBP's is the exact margin minimum. ``beta=None`` follows the
    default, 1 - epsilon / target = 0.5 here."""
    rng = np.random.default_rng(2)
    weights = stable_weights(rng)
    model = mlp(weights)
    x, y = data(rng)
    logits, ibp, exact, _ = reference_parts(weights, x, y)
    kappa = 0.6
    weight = 0.5 if beta is None else beta
    lower = weight * exact + (1 - weight) * ibp
    expected = kappa * cross_entropy(logits, y).mean() + (1 - kappa) * (
        cross_entropy(-lower, y).mean()
    )
    # A mixed variant the swapped blend would produce is clearly different.
    swapped = (1 - weight) * exact + weight * ibp
    if weight != 0.5:
        assert (
            abs(cross_entropy(-swapped, y).mean() - cross_entropy(-lower, y).mean())
            > 1e-2
        )
    model_like = SimpleNamespace(loss=None)
    objective = vn.objectives.CROWNIBP(beta=beta, kappa=kappa)
    got = objective_loss(objective, model, model_like, x, y, logits)
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_crown_ibp_fused_loss_is_the_beta_blend(beta):
    """The fused loss (Keras's logits cross-entropy): per sample
    ``beta · log S_max + (1 - beta) · logsumexp(m_up)`` with ``m_j = z_j - z_y``
    bounded by IBP, ``exp`` replaced by its chord on ``[m_low, m_up]`` and the
    resulting linear function of the input maximized exactly over the box."""
    rng = np.random.default_rng(3)
    weights = stable_weights(rng)
    model = mlp(weights)
    x, y = data(rng)
    logits, ibp, _, (M, c, low, up) = reference_parts(weights, x, y)
    W1, B1, W2, B2 = (w.astype(np.float64) for w in weights)
    h_low, h_up = affine_interval(low, up, W1, B1)
    ibp_upper = -margin_lower_ibp(
        np.maximum(h_low, 0), np.maximum(h_up, 0), -W2, -B2, y
    )  # upper bounds of z_y - z_j
    m_low, m_up = -ibp_upper, -ibp
    ibp_loss = logsumexp(m_up)
    width = m_up - m_low
    wide = width > 1e-6
    slope = np.where(
        wide, (np.exp(m_up) - np.exp(m_low)) / np.where(wide, width, 1), np.exp(m_up)
    )
    intercept = np.exp(m_up) - slope * m_up
    fused = np.empty(BATCH)
    for i, label in enumerate(y):
        # sum_j slope_j (z_j - z_y) = x · coeff + const on the range.
        coeff = (M - M[:, label][:, None]) @ slope[i]
        const = (c - c[label]) @ slope[i]
        s_max = -box_min(-coeff, low[i], up[i]) + const + intercept[i].sum()
        fused[i] = np.log(max(s_max, 1.0))
    robust = (beta * fused + (1 - beta) * ibp_loss).mean()
    assert abs(fused.mean() - ibp_loss.mean()) > 1e-2
    kappa = 0.6
    expected = kappa * cross_entropy(logits, y).mean() + (1 - kappa) * robust
    model_like = SimpleNamespace(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    objective = vn.objectives.CROWNIBP(beta=beta, kappa=kappa)
    got = objective_loss(objective, model, model_like, x, y, logits)
    assert got == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------
# Batch normalization in training mode
# ---------------------------------------------------------------------------


def _bn_model(rng):
    """Dense -> BatchNormalization -> ReLU -> Dense with moving statistics far
    from the batch's, and gammas of both signs."""
    W1 = rng.standard_normal((IN, HIDDEN)).astype(np.float32)
    B1 = rng.uniform(1.0, 2.0, HIDDEN).astype(np.float32)
    W2 = rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32)
    B2 = rng.standard_normal(CLASSES).astype(np.float32)
    model = mlp((W1, B1, W2, B2), bn=True)
    bn = model.layers[1]
    gamma = rng.uniform(0.5, 1.5, HIDDEN) * np.where(np.arange(HIDDEN) % 3, 1, -1)
    beta = rng.uniform(-0.3, 0.3, HIDDEN)
    moving_mean = rng.uniform(-1.0, 0.0, HIDDEN)
    moving_var = rng.uniform(2.0, 4.0, HIDDEN)
    bn.set_weights(
        [w.astype(np.float32) for w in (gamma, beta, moving_mean, moving_var)]
    )
    return model, (W1, B1, W2, B2, gamma, beta, bn.epsilon)


def _bn_reference(params, x, y, mean, var):
    """Logits, IBP margin lower bounds and training forward with given stats."""
    W1, B1, W2, B2, gamma, beta, bn_eps = (np.asarray(p, np.float64) for p in params)
    scale = gamma / np.sqrt(var + bn_eps)
    shift = beta - mean * scale

    def forward(v):
        return np.maximum((v @ W1 + B1) * scale + shift, 0) @ W2 + B2

    low, up = box(x.astype(np.float64))
    d_low, d_up = affine_interval(low, up, W1, B1)
    n_low = np.where(scale > 0, d_low * scale, d_up * scale) + shift
    n_up = np.where(scale > 0, d_up * scale, d_low * scale) + shift
    lower = margin_lower_ibp(np.maximum(n_low, 0), np.maximum(n_up, 0), W2, B2, y)
    return forward(x.astype(np.float64)), lower, forward


@pytest.mark.parametrize("kappa", [0.0, 0.5])
def test_training_bounds_use_the_clean_batch_statistics(kappa):
    """In training mode the IBP loss is computed with the clean batch's mean
    and (biased) variance at the BatchNormalization (with its epsilon), not
    with the moving statistics; the per-sample bound holds at points of the
    ball fed through that same batch-normalized function."""
    rng = np.random.default_rng(4)
    model, params = _bn_model(rng)
    x, y = data(rng)
    W1, B1 = params[0].astype(np.float64), params[1].astype(np.float64)
    pre = x.astype(np.float64) @ W1 + B1
    mean, var = pre.mean(axis=0), pre.var(axis=0)
    logits, lower, forward = _bn_reference(params, x, y, mean, var)
    moving = [np.asarray(w, np.float64) for w in model.layers[1].get_weights()[2:]]
    _, lower_moving, _ = _bn_reference(params, x, y, *moving)
    robust = cross_entropy(-lower, y)
    assert abs(robust.mean() - cross_entropy(-lower_moving, y).mean()) > 0.1
    expected = kappa * cross_entropy(logits, y).mean() + (1 - kappa) * robust.mean()
    objective = vn.objectives.IBP(kappa=kappa)
    got = objective_loss(objective, model, None, x, y, logits, training=True)
    assert got == pytest.approx(expected, rel=1e-5)
    if kappa == 0:
        # Per sample (an unreduced loss), the robust loss bounds the
        # cross-entropy of the batch-normalized function over the box.
        per_sample = objective_loss(
            objective, model, None, x, y, logits, training=True, reduction=None
        )
        np.testing.assert_allclose(per_sample, robust, rtol=1e-5)
        low, up = box(x.astype(np.float64))
        for i, label in enumerate(y):
            points = rng.uniform(low[i], up[i], (2000, IN))
            worst = cross_entropy(forward(points), np.full(len(points), label))
            assert worst.max() <= per_sample[i] + 1e-5
    # The reference is Keras's training-mode forward pass.
    train_out = keras.ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_allclose(train_out, logits, rtol=1e-4, atol=1e-4)
