"""vn.refine: certify, weight the uncovered samples, fit, keep the best round."""

import importlib

import keras  # noqa: I001
import numpy as np
import pytest
from small_models import digits_mlp

import verinet as vn
from verinet import layers

# ``vn.refine`` is the function; the module behind it, for patching.
refine_module = importlib.import_module("verinet.refine")

EPSILON = 0.1


@pytest.fixture(scope="module")
def data():
    (x, y), (x_test, y_test) = vn.datasets.digits()
    return (x[:300], y[:300]), (x_test[:100], y_test[:100])


def trained(data, learning_rate=1e-2):
    """A small IBP-trained MLP (the epsilon ramp already complete)."""
    (x, y), _ = data
    keras.utils.set_random_seed(0)
    model = digits_mlp()
    model.compile(
        keras.optimizers.Adam(learning_rate),
        robust="ibp",
        epsilon=EPSILON,
        input_range=(0, 1),
        epsilon_schedule=vn.schedules.Linear(ramp_epochs=2),
    )
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model


class FitSpy:
    """Wraps ``model.fit``: records its arguments and the weights after it;
    from round ``zero_from`` on, zeroes the last layer after fitting."""

    def __init__(self, model, zero_from=None):
        self.model, self.fit, self.zero_from = model, model.fit, zero_from
        self.calls, self.weights = [], []

    def __call__(self, x, y, **kwargs):
        self.calls.append((x, y, kwargs))
        history = self.fit(x, y, **kwargs)
        if self.zero_from is not None and len(self.calls) >= self.zero_from:
            last = self.model.layers[-1]
            last.kernel.assign(np.zeros(last.kernel.shape, "float32"))
            last.bias.assign(np.zeros(last.bias.shape, "float32"))
        self.weights.append(self.model.get_weights())
        return history


def spy_on(model, monkeypatch, zero_from=None):
    spy = FitSpy(model, zero_from)
    monkeypatch.setattr(model, "fit", spy)
    return spy


def check_weights(model, expected):
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_history_best_round_and_restored_weights(data, monkeypatch):
    (x, y), val = data
    model = trained(data)
    initial = model.get_weights()
    spy = spy_on(model, monkeypatch, zero_from=2)  # rounds 2+ certify nothing
    history = vn.refine(model, x, y, val, rounds=4, patience=2, verbose=0)
    assert history["round"] == [1, 2, 3]  # two rounds without improvement
    for key in refine_module.ROUND_KEYS:
        assert len(history[key]) == 3, key
    values = [history["initial_val_certified_accuracy"]]
    values += history["val_certified_accuracy"]
    assert values[2:] == [0.0, 0.0] and max(values[:2]) > 0, values
    best = int(np.argmax(values))  # the first maximum: ties do not improve
    assert history["best_round"] == best
    assert history["best_val_certified_accuracy"] == values[best] == max(values)
    assert history["epsilon"] == EPSILON and history["method"] == "crown"
    assert all(s > 0 for s in history["seconds"])
    assert all(
        isinstance(history[k][0], int)
        for k in ("train_unknown", "train_falsified", "counterexamples_added")
    )
    check_weights(model, initial if best == 0 else spy.weights[best - 1])
    again = vn.certify(model, *val, EPSILON, attack=None, input_range=(0, 1))
    assert again.verified_accuracy == history["best_val_certified_accuracy"]


def test_sample_weights_and_counterexamples_reach_fit(data, monkeypatch):
    (x, y), val = data
    model = trained(data)
    reports = []

    def recording_certify(*args, **kwargs):
        reports.append(vn.certify(*args, **kwargs))
        return reports[-1]

    monkeypatch.setattr(refine_module, "certify", recording_certify)
    spy = spy_on(model, monkeypatch)
    weight = 3.5
    history = vn.refine(
        model,
        x,
        y,
        val,
        rounds=2,
        patience=5,
        weight=weight,
        epochs_per_round=2,
        verbose=0,
    )
    assert len(spy.calls) == 2 and len(reports) == 5  # val, then train + val
    for number, (x_fit, y_fit, kwargs) in enumerate(spy.calls):
        train = reports[1 + 2 * number]
        assert train.num_samples == len(x) and train.epsilon == EPSILON
        sample_weight = kwargs["sample_weight"]
        assert kwargs["epochs"] == 2
        np.testing.assert_array_equal(
            sample_weight[: len(x)], np.where(train.verified, 1.0, weight)
        )
        np.testing.assert_array_equal(x_fit[: len(x)], x)
        np.testing.assert_array_equal(y_fit[: len(x)], y)
        index, points = train.counterexamples()
        attacked = index[train.predictions[index] == y[index]]
        added = history["counterexamples_added"][number]
        assert added == len(attacked) > 0
        assert len(x_fit) == len(y_fit) == len(sample_weight) == len(x) + added
        np.testing.assert_array_equal(sample_weight[len(x) :], weight)
        np.testing.assert_array_equal(y_fit[len(x) :], y[attacked])
        np.testing.assert_array_equal(x_fit[len(x) :], points[np.isin(index, attacked)])
        distance = np.abs(x_fit[len(x) :] - x[attacked]).max()
        assert distance <= EPSILON * (1 + 1e-6)
        assert history["train_unknown"][number] == int(train.unknown.sum())
        assert history["train_falsified"][number] == int(train.falsified.sum())


def test_certify_size_and_no_attack(data, monkeypatch):
    (x, y), val = data
    model = trained(data)
    spy = spy_on(model, monkeypatch)
    history = vn.refine(
        model, x, y, val, rounds=1, certify_size=120, attack=None, verbose=0
    )
    x_fit, _, kwargs = spy.calls[0]
    assert history["counterexamples_added"] == [0] and len(x_fit) == len(x)
    weighted = int(np.sum(kwargs["sample_weight"] == 4.0))
    assert weighted == history["train_unknown"][0] + history["train_falsified"][0]
    assert 0 < weighted <= 120
    assert set(np.unique(kwargs["sample_weight"])) <= {1.0, 4.0}


def test_stops_after_patience_rounds_without_improvement(data):
    (x, y), val = data
    model = trained(data)
    model.optimizer.learning_rate.assign(0.0)  # fit changes nothing
    before = model.get_weights()
    history = vn.refine(model, x, y, val, rounds=6, patience=3, verbose=0)
    assert history["round"] == [1, 2, 3]
    assert history["best_round"] == 0
    assert (
        history["val_certified_accuracy"]
        == [history["initial_val_certified_accuracy"]] * 3
    )
    check_weights(model, before)


def test_errors(data):
    (x, y), val = data
    model = trained(data)
    plain = vn.Sequential([layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(10)])
    with pytest.raises(vn.InvalidInputError, match="not compiled"):
        vn.refine(plain, x, y, val, epsilon=0.1)
    bad = {
        "rounds": (0, "rounds must be an int >= 1"),
        "patience": (0, "patience must be an int >= 1"),
        "epochs_per_round": (1.5, "epochs_per_round must be an int"),
        "weight": (0.0, "weight must be a finite number > 0"),
        "certify_size": (0, "certify_size must be an int >= 1"),
        "verbose": (3, "Unknown verbose 3"),
    }
    for name, (value, match) in bad.items():
        with pytest.raises(vn.InvalidInputError, match=match):
            vn.refine(model, x, y, val, **{name: value})
    x_nan = x.copy()
    x_nan[3, 0, 0, 0] = np.nan
    with pytest.raises(vn.InvalidInputError, match="x contains 1 NaN"):
        vn.refine(model, x_nan, y, val)
    x_val_nan = val[0].copy()
    x_val_nan[0] = np.nan
    with pytest.raises(vn.InvalidInputError, match="validation_data x contains"):
        vn.refine(model, x, y, (x_val_nan, val[1]))
    with pytest.raises(vn.InvalidInputError, match="validation_data must be a pair"):
        vn.refine(model, x, y, val[0])
    with pytest.raises(vn.InvalidInputError, match="vector of 300 integer labels"):
        vn.refine(model, x, y[:-1], val)
    standard = vn.Sequential(
        [layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(10)]
    )
    standard.compile("adam")
    with pytest.raises(vn.InvalidInputError, match="refine needs an epsilon"):
        vn.refine(standard, x, y, val)
