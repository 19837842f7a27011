"""History metrics of the robust objectives are means over samples, and
TRADES weighs its KL term by the sample (and class) weights."""

import verinet as vn  # noqa: I001 - verinet before keras

import keras
import numpy as np
import pytest
import torch

from verinet import layers as L


def _data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 6)).astype(np.float32)
    return x, (x[:, 0] > x[:, 1]).astype("int64")


def _model(seed=3):
    keras.utils.set_random_seed(seed)
    return vn.Sequential(
        [L.Input((6,)), L.Dense(16), L.ReLU(), L.Dense(16), L.ReLU(), L.Dense(2)]
    )


def test_verified_accuracy_is_a_mean_over_samples_not_batch_means():
    """With the learning rate 0 the weights stay put, so the epoch's verified
    accuracy is the fraction of training samples whose IBP margin bounds at
    the (constant) epsilon are positive: computed here by ``margin_bounds``.
    Batches of 32 over 100 samples leave a last batch of 4, whose mean would
    weigh as much as a full batch's in a mean of batch means."""
    x, y = _data()
    model = _model()
    model.compile(
        keras.optimizers.SGD(0.0),
        robust="ibp",
        epsilon=vn.schedules.Constant(0.05),
        input_range=(0, 1),
    )
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    margins = vn.margin_bounds(model, x, y, 0.05, method="ibp", input_range=(0, 1))
    proven = (np.min(margins, axis=1) > 0).astype(float)
    per_sample = proven.mean()
    batch_means = np.mean([proven[i : i + 32].mean() for i in range(0, 100, 32)])
    assert abs(per_sample - batch_means) > 1e-3  # the two readings differ here
    assert history.history["verified_accuracy"][0] == pytest.approx(per_sample)


def test_adversarial_accuracy_is_a_mean_over_samples():
    """PGD training's adversarial accuracy with a radius of 0: the attack
    cannot move, so it is the clean accuracy over all samples."""
    x, y = _data(seed=1)
    model = _model()
    model.compile(
        keras.optimizers.SGD(0.0), robust="pgd", epsilon=vn.schedules.Constant(0.0)
    )
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    correct = np.argmax(model.predict(x, verbose=0), axis=1) == y
    batch_means = np.mean([correct[i : i + 32].mean() for i in range(0, 100, 32)])
    assert abs(correct.mean() - batch_means) > 1e-3
    assert history.history["adversarial_accuracy"][0] == pytest.approx(correct.mean())


def _trades_loss(model, x, y, weights, seed=5):
    torch.manual_seed(seed)  # the same attack starts for each call
    return model.evaluate(
        x, y, sample_weight=weights, batch_size=len(x), verbose=0, return_dict=True
    )["loss"]


def test_trades_loss_is_linear_in_the_sample_weights():
    """Every term of the TRADES loss is a weighted sum over samples: the
    loss under ``w1 + w2`` is the loss under ``w1`` plus under ``w2`` (the
    attack repeated with the same seed), and zero weights give zero."""
    x, y = _data(n=40, seed=2)
    model = _model()
    model.compile(
        "adam",
        robust="trades",
        epsilon=vn.schedules.Constant(0.1),
        input_range=(0, 1),
        beta=6.0,
        metrics=[],
    )
    rng = np.random.default_rng(0)
    w1, w2 = rng.uniform(0, 2, 40), rng.uniform(0, 2, 40)
    _trades_loss(model, x, y, w1)  # the first call builds the step (draws)
    both = _trades_loss(model, x, y, w1 + w2)
    assert both == pytest.approx(
        _trades_loss(model, x, y, w1) + _trades_loss(model, x, y, w2), rel=1e-4
    )
    assert _trades_loss(model, x, y, np.zeros(40)) == pytest.approx(0.0, abs=1e-7)


def test_trades_class_weight_reaches_the_kl_term():
    """``class_weight`` of 0 for every class leaves nothing to learn from:
    the reported loss is 0 and the weights do not move."""
    x, y = _data(n=64, seed=4)
    model = _model()
    model.compile(
        keras.optimizers.SGD(0.5),
        robust="trades",
        epsilon=vn.schedules.Constant(0.1),
        input_range=(0, 1),
        metrics=[],
    )
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(
        x, y, batch_size=16, epochs=1, class_weight={0: 0.0, 1: 0.0}, verbose=0
    )
    assert history.history["loss"][0] == pytest.approx(0.0, abs=1e-7)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
