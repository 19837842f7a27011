"""Bound methods as a hidden-layer strategy plus an output strategy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from soundness_utils import check_soundness, random_inputs, randomize_weights

import verinet as vn
from verinet import layers
from verinet.bounds import (
    BoundMethod,
    CROWNHidden,
    CROWNOutput,
    IntervalHidden,
    IntervalOutput,
)


def _cnn():
    return keras.Sequential(
        [
            layers.Input((7, 7, 2)),
            layers.Conv2D(4, 3, strides=2, padding="same"),
            layers.ReLU(),
            layers.Conv2D(5, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(8),
            layers.ReLU(),
            layers.Dense(3),
        ]
    )


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(12)
    model = randomize_weights(_cnn(), rng, scale=1.5)
    x = random_inputs((7, 7, 2), 3, rng, (0.0, 1.0))
    return model, x


def _bounds(model, x, method):
    return vn.compute_bounds(model, x, 0.08, method=method, input_range=(0.0, 1.0))


@pytest.mark.parametrize(
    "name,hidden,output",
    [
        ("ibp", IntervalHidden(), IntervalOutput()),
        ("crown-ibp", IntervalHidden(), CROWNOutput()),
        ("crown", CROWNHidden(), CROWNOutput()),
    ],
)
def test_the_shortcuts_are_their_parts(case, name, hidden, output):
    model, x = case
    composed = _bounds(model, x, BoundMethod(hidden, output, name))
    shortcut = _bounds(model, x, name)
    np.testing.assert_array_equal(composed[0], shortcut[0])
    np.testing.assert_array_equal(composed[1], shortcut[1])


def test_a_new_combination_is_sound_and_between_its_neighbours(case):
    """CROWN hidden bounds with IBP's output: tighter than IBP, looser than
    CROWN (same hidden bounds, cheaper output), and sound."""
    model, x = case
    mixed = BoundMethod(CROWNHidden(), IntervalOutput(), "crown-hidden-ibp-output")
    _, bounds = check_soundness(
        model, x, 0.08, input_range=(0.0, 1.0), methods=("ibp", mixed, "crown")
    )
    (i_low, i_up), (m_low, m_up), (c_low, c_up) = bounds.values()
    assert np.all(m_low >= i_low - 1e-6) and np.all(m_up <= i_up + 1e-6)
    assert np.all(c_low >= m_low - 1e-6) and np.all(c_up <= m_up + 1e-6)
    assert np.mean(m_up - m_low) < np.mean(i_up - i_low)


def test_training_objectives_use_the_same_parts():
    """CROWN-IBP training's margin bound is the CROWN-IBP method's."""
    rng = np.random.default_rng(3)
    model = randomize_weights(_cnn(), rng)
    x = random_inputs((7, 7, 2), 4, rng, (0.0, 1.0))
    y = np.array([0, 1, 2, 0])
    objective = vn.objectives.CROWNIBP(beta=1.0)
    graph = vn.bounds.BoundGraph(model)
    C = vn.bounds.api.margin_spec(y, 3)
    ball = vn.bounds.LinfBall(0.05, (0.0, 1.0))

    class _Context:
        epsilon = 0.05

    trained = objective.margin_lower(
        _Context(),
        graph,
        keras.ops.convert_to_tensor(x),
        ball,
        keras.ops.convert_to_tensor(C),
    )
    method = vn.compute_bounds(
        model, x, 0.05, method="crown-ibp", input_range=(0.0, 1.0), C=C
    )[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(trained), method, rtol=1e-5, atol=1e-5
    )
