"""MaxPooling2D's CROWN relaxation near ties, against values derived by hand.

The relaxation bounds a window's maximum above by the input ``x_j`` of
largest lower bound only when ``l_j`` dominates every other upper bound;
otherwise by the constant ``max_i u_i``. These tests build windows where
``l_j`` falls short of another input's upper bound by a tiny fraction
(0.05%) of the interval widths, so a dominance test that is off by even
0.1% of a width claims ``y = x_j`` and the bound drops below the true
maximum, which is computed here by hand at the vertex where the
non-dominant input sits at its upper bound.
"""

import keras
import numpy as np
import pytest

import verinet as vn
from verinet import layers

METHODS = ("ibp", "crown", "crown-ibp")


def _exact_max_minus_chosen(lower, upper, chosen):
    """max over the box of ``max_i x_i - x_chosen``: ``max(0, u_i - l_chosen)``."""
    others = np.delete(upper, chosen)
    return max(0.0, float(np.max(others - lower[chosen])))


def test_max_pool_bound_of_max_minus_chosen_input_near_a_tie():
    """Bound ``maxpool(x) - x_j`` per window, ``j`` the largest lower bound.

    Per 2x2 window (stride 2) of a 4x4x2 input the chosen input ``a`` has the
    largest lower bound and a rival ``b`` reaches ``u_b = l_a + delta``,
    ``delta`` between 0.01% and 0.05% of the common width ``2 eps``. Where
    ``y = x_a`` is claimed, the bound on ``y - x_a`` would be 0 while the
    true maximum is ``delta`` (at ``x_a = l_a``, ``x_b = u_b``).
    """
    rng = np.random.default_rng(7)
    eps = 0.5
    width = 2 * eps
    h, w, c = 4, 4, 2
    x = np.zeros((h, w, c))
    chosen_flat = []  # flat input index of each window's chosen input
    deltas = []
    for i in range(0, h, 2):
        for j in range(0, w, 2):
            for ch in range(c):
                cells = [(i + di, j + dj) for di in range(2) for dj in range(2)]
                order = rng.permutation(4)
                a, b = cells[order[0]], cells[order[1]]
                base = rng.uniform(-1.0, 1.0)
                delta = width * rng.uniform(1e-4, 5e-4)
                x[a + (ch,)] = base
                # u_b = x_b + eps = (base - eps) + delta = l_a + delta.
                x[b + (ch,)] = base - width + delta
                for cell in (cells[order[2]], cells[order[3]]):
                    x[cell + (ch,)] = base - width - rng.uniform(0.05, 1.0)
                chosen_flat.append(np.ravel_multi_index(a + (ch,), (h, w, c)))
                deltas.append(delta)
    # Output k (Flatten order of the pooled (2, 2, 2) map, the order the
    # windows were built in) is window k's maximum minus its chosen input.
    pooled_order = [(i, j, ch) for i in range(2) for j in range(2) for ch in range(c)]
    n_out = len(chosen_flat)
    select = np.zeros((h * w * c, n_out))
    for k, flat in enumerate(chosen_flat):
        select[flat, k] = -1.0

    inp = keras.Input((h, w, c))
    pooled = layers.Flatten()(layers.MaxPooling2D(2)(inp))
    pick = layers.Dense(n_out, use_bias=False)
    minus = pick(layers.Flatten()(inp))
    model = vn.Model(inp, layers.Add()([pooled, minus]))
    pick.set_weights([select.astype("float32")])

    lower, upper = (x - eps).reshape(-1), (x + eps).reshape(-1)
    expected = []
    for k, flat in enumerate(chosen_flat):
        i, j, ch = pooled_order[k]
        window = [
            np.ravel_multi_index((2 * i + di, 2 * j + dj, ch), (h, w, c))
            for di in range(2)
            for dj in range(2)
        ]
        pos = window.index(flat)
        expected.append(_exact_max_minus_chosen(lower[window], upper[window], pos))
        assert expected[-1] == pytest.approx(deltas[k], rel=1e-6)
    expected = np.array(expected)
    # The model reaches each maximum: chosen inputs at their lower bounds,
    # every other input at its upper bound.
    vertex = upper.copy()
    vertex[chosen_flat] = lower[chosen_flat]
    reached = np.asarray(model.predict(vertex.reshape(1, h, w, c), verbose=0))[0]
    np.testing.assert_allclose(reached, expected, rtol=1e-3, atol=2e-6)
    for method in METHODS:
        low, up = vn.compute_bounds(model, x[None], eps, method=method, dtype="float64")
        assert np.all(up[0] >= expected - 1e-9), (method, up[0], expected)
        assert np.all(low[0] <= 1e-9), (method, low[0])


@pytest.mark.parametrize("gap", [5e-4, 5e-3])
def test_max_pool_upper_bound_reaches_a_rival_above_the_chosen_input(gap):
    """A narrow chosen input just above a wide rival's lower part.

    A Dense layer scales two inputs in [0, 1] onto ``a in [-gap, -gap/2]``
    and ``b in [-1, 0]``: ``a`` has the larger lower bound but ``b``'s upper
    bound 0 exceeds it by ``gap`` (0.05% or 0.5% of ``b``'s width), so the
    window's true maximum over the box is 0, at ``b = 0``. Claiming
    ``y = x_a`` would bound it by ``u_a = -gap/2``.
    """
    inp = keras.Input((2,))
    scale = layers.Dense(2)
    pair = scale(inp)
    pooled = layers.MaxPooling2D((1, 2))(layers.Reshape((1, 2, 1))(pair))
    model = vn.Model(inp, layers.Flatten()(pooled))
    kernel = np.diag([gap / 2, 1.0]).astype("float32")
    bias = np.array([-gap, -1.0], dtype="float32")
    scale.set_weights([kernel, bias])
    x = np.array([[0.5, 0.5]])
    truth = 0.0  # max(a, b) at a = -gap/2, b = 0: the vertex (1, 1)
    reached = float(np.asarray(model.predict(np.ones((1, 2)), verbose=0))[0, 0])
    assert reached == pytest.approx(truth, abs=1e-7)
    for method in METHODS:
        low, up = vn.compute_bounds(
            model, x, 0.5, method=method, input_range=(0.0, 1.0), dtype="float64"
        )
        assert up[0, 0] >= truth - 1e-12, (method, up[0, 0])
        # The lower bound is at most the smallest maximum, a = -gap at (0, 0)
        # (the float32 bias).
        assert low[0, 0] <= float(bias[0]) + 1e-12, (method, low[0, 0])
