"""fit/evaluate refuse bad data and compile refuses bad objective arguments.

Every refusal is a ``vn.InvalidInputError`` that says what is wrong, raised
before the data can reach a weight.
"""

import math

import keras  # noqa: I001
import numpy as np
import pytest
import torch

import verinet as vn
from verinet import layers

FIT = dict(batch_size=32, verbose=0)


@pytest.fixture(scope="module")
def digits():
    (x, y), _ = vn.datasets.digits()
    return x[:128], y[:128]


def mlp():
    keras.utils.set_random_seed(0)
    return vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(16),
            layers.ReLU(),
            layers.Dense(10),
        ]
    )


def compiled(robust="ibp", epsilon=0.05, **options):
    model = mlp()
    if robust in ("pgd", "trades"):
        options.setdefault("steps", 2)
    model.compile("adam", robust=robust, epsilon=epsilon, input_range=(0, 1), **options)
    return model


def weights(model):
    return [np.array(w) for w in model.get_weights()]


def assert_same_weights(before, model):
    after = weights(model)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def with_nan(x, row=5):
    x = x.copy()
    x[row, 2, 3, 0] = np.nan
    return x


# --- in-memory arrays: checked once, before training ---------------------------


@pytest.mark.parametrize("robust", ["standard", "ibp", "crown-ibp", "pgd"])
def test_unscaled_data_is_refused_before_training(robust, digits):
    x, y = digits
    model = compiled(robust)
    before = weights(model)
    with pytest.raises(vn.InvalidInputError, match=r"x lies in \[0, 16\].*input_range"):
        model.fit(x * 16, y, epochs=1, **FIT)
    assert_same_weights(before, model)
    with pytest.raises(vn.InvalidInputError, match="evaluate.*outside"):
        model.evaluate(x * 16, y, verbose=0)


@pytest.mark.parametrize("robust", ["standard", "ibp", "smoothing"])
def test_nan_inputs_are_refused_and_weights_kept(robust, digits):
    x, y = digits
    model = compiled(robust)
    before = weights(model)
    with pytest.raises(vn.InvalidInputError, match=r"NaN.*1 of 128 samples.*index 5"):
        model.fit(with_nan(x), y, epochs=1, **FIT)
    assert_same_weights(before, model)


@pytest.mark.parametrize("robust", ["standard", "ibp"])
def test_one_hot_labels_are_named(robust, digits):
    x, y = digits
    one_hot = keras.utils.to_categorical(y, 10)
    model = compiled(robust)
    before = weights(model)
    with pytest.raises(vn.InvalidInputError, match=r"one-hot.*argmax"):
        model.fit(x, one_hot, epochs=1, **FIT)
    with pytest.raises(vn.InvalidInputError, match="one-hot"):
        model.evaluate(x, one_hot, verbose=0)
    assert_same_weights(before, model)
    if robust == "standard":
        # A loss that wants one-hot rows gets them: no label check applies.
        model = mlp()
        model.compile(
            "adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True)
        )
        losses = model.fit(x, one_hot, epochs=2, **FIT).history["loss"]
        assert losses[1] < losses[0]


def test_labels_out_of_range_are_named(digits):
    x, y = digits
    model = compiled("standard")
    with pytest.raises(vn.InvalidInputError, match=r"\[0, 10\].*10 outputs"):
        model.fit(x, np.where(y == 3, 10, y), epochs=1, **FIT)
    with pytest.raises(vn.InvalidInputError, match="integer labels"):
        model.fit(x, y + 0.5, epochs=1, **FIT)


def test_input_shape_is_named(digits):
    x, y = digits
    model = compiled("ibp")
    with pytest.raises(vn.InvalidInputError, match=r"shape \(128, 64\).*8, 8, 1"):
        model.fit(x.reshape(128, 64), y, epochs=1, **FIT)


def test_torch_tensors_are_checked_like_arrays(digits):
    x, y = digits
    model = compiled("ibp")
    before = weights(model)
    with pytest.raises(vn.InvalidInputError, match="NaN"):
        model.fit(torch.tensor(with_nan(x)), torch.tensor(y), epochs=1, **FIT)
    assert_same_weights(before, model)


def test_validation_data_is_checked_before_training(digits):
    x, y = digits
    model = compiled("ibp")
    before = weights(model)
    with pytest.raises(vn.InvalidInputError, match="validation_data.*one-hot"):
        model.fit(
            x,
            y,
            epochs=1,
            validation_data=(x[:32], keras.utils.to_categorical(y[:32], 10)),
            **FIT,
        )
    with pytest.raises(vn.InvalidInputError, match="validation_data.*NaN"):
        model.fit(x, y, epochs=1, validation_data=(with_nan(x[:32]), y[:32]), **FIT)
    assert_same_weights(before, model)
    # validation_split takes its rows from x: the NaN in the last rows is
    # found before the first training step.
    with pytest.raises(vn.InvalidInputError, match="NaN"):
        model.fit(with_nan(x, row=120), y, epochs=1, validation_split=0.1, **FIT)
    assert_same_weights(before, model)


def test_integer_labels_as_a_column_train_the_robust_objectives(digits):
    x, y = digits
    losses = []
    for labels in (y, y[:, None]):
        model = compiled("ibp", epsilon_schedule=None)
        losses.append(model.fit(x, labels, epochs=1, **FIT).history["loss"][0])
    assert losses[0] == pytest.approx(losses[1])


# --- generators, PyDataset, DataLoader: checked batch by batch -----------------


def batches(x, y, bad=None, count=3):
    """``count`` batches of 32; batch ``bad`` holds a NaN."""
    out = []
    for i in range(count):
        xb, yb = x[i * 32 : (i + 1) * 32].copy(), y[i * 32 : (i + 1) * 32]
        if i == bad:
            xb[7, 0, 0, 0] = np.nan
        out.append((xb, yb))
    return out


class Batches(keras.utils.PyDataset):
    def __init__(self, items):
        super().__init__()
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def source(kind, items):
    if kind == "generator":
        return (item for item in items)
    if kind == "pydataset":
        return Batches(items)
    tensors = torch.utils.data.TensorDataset(
        torch.tensor(np.concatenate([x for x, _ in items])),
        torch.tensor(np.concatenate([y for _, y in items])),
    )
    return torch.utils.data.DataLoader(tensors, batch_size=32, shuffle=False)


@pytest.mark.parametrize("kind", ["generator", "pydataset", "dataloader"])
def test_a_bad_batch_is_named_and_never_trained_on(kind, digits):
    x, y = digits
    # A constant epsilon: the steps per epoch differ between the two runs.
    epsilon = vn.schedules.Constant(0.05)
    model = compiled("ibp", epsilon)
    with pytest.raises(vn.InvalidInputError, match=r"batch 2 of epoch 0.*NaN"):
        model.fit(
            source(kind, batches(x, y, bad=2)), epochs=1, shuffle=False, verbose=0
        )
    # The two good batches trained; the bad one touched nothing.
    reference = compiled("ibp", epsilon)
    reference.fit(
        source(kind, batches(x, y, count=2)), epochs=1, shuffle=False, verbose=0
    )
    assert_same_weights(weights(reference), model)


def test_a_bad_first_batch_leaves_the_weights_untouched(digits):
    x, y = digits
    model = compiled("standard")
    before = weights(model)
    items = [(xb * 4, yb) for xb, yb in batches(x, y)]
    with pytest.raises(vn.InvalidInputError, match=r"batch 0 of epoch 0.*input_range"):
        model.fit(source("generator", items), epochs=1, shuffle=False, verbose=0)
    assert_same_weights(before, model)


@pytest.mark.parametrize("robust", ["standard", "ibp"])
def test_one_hot_labels_from_a_generator_are_named(robust, digits):
    x, y = digits
    items = [(xb, keras.utils.to_categorical(yb, 10)) for xb, yb in batches(x, y)]
    model = compiled(robust)
    before = weights(model)
    with pytest.raises(vn.InvalidInputError, match="training data.*one-hot"):
        model.fit(source("generator", items), epochs=1, shuffle=False, verbose=0)
    assert_same_weights(before, model)


def test_validation_and_evaluate_batches_are_checked(digits):
    x, y = digits
    model = compiled("ibp")
    bad = batches(x, y)
    bad[0] = (bad[0][0], np.concatenate([[-1], bad[0][1][1:]]))
    with pytest.raises(vn.InvalidInputError, match="validation_data, batch 0"):
        model.fit(
            x,
            y,
            epochs=1,
            validation_data=source("pydataset", bad),
            shuffle=False,
            **FIT,
        )
    with pytest.raises(vn.InvalidInputError, match=r"evaluate's data, batch 1.*NaN"):
        model.evaluate(source("dataloader", batches(x, y, bad=1)), verbose=0)
    # Good data from the same kinds of source still runs.
    good = model.evaluate(source("dataloader", batches(x, y)), verbose=0)
    assert np.all(np.isfinite(good))


# --- compile arguments: schedules and objectives --------------------------------

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: vn.schedules.Constant(NAN), "Constant value"),
        (lambda: vn.schedules.Constant(INF), "Constant value"),
        (lambda: vn.schedules.Constant(True), "Constant value"),
        (lambda: vn.schedules.Linear(end=NAN), "Linear end"),
        (lambda: vn.schedules.Linear(start=-INF, end=0.1), "Linear start"),
        (lambda: vn.schedules.Linear(warmup_epochs=NAN), "warmup_epochs"),
        (lambda: vn.schedules.SmoothRamp(ramp_epochs=INF), "ramp_epochs"),
        (lambda: vn.schedules.SmoothRamp(end="0.1"), "SmoothRamp end"),
        (lambda: vn.objectives.PGD(steps=-3), "PGD steps must be an int >= 1"),
        (lambda: vn.objectives.PGD(steps=0), "PGD steps"),
        (lambda: vn.objectives.PGD(steps=2.5), "PGD steps"),
        (lambda: vn.objectives.PGD(steps=True), "PGD steps"),
        (lambda: vn.objectives.PGD(step_size=-0.1), "PGD step_size"),
        (lambda: vn.objectives.PGD(step_size=NAN), "PGD step_size"),
        (lambda: vn.objectives.PGD(restarts=0), "PGD restarts"),
        (lambda: vn.objectives.TRADES(beta=-1.0), "TRADES beta"),
        (lambda: vn.objectives.TRADES(beta=NAN), "TRADES beta"),
        (lambda: vn.objectives.TRADES(steps=0), "TRADES steps"),
        (lambda: vn.objectives.TRADES(step_size=0.0), "TRADES step_size"),
        (lambda: vn.objectives.IBP(kappa=1.5), r"IBP kappa.*\[0, 1\]"),
        (lambda: vn.objectives.IBP(kappa=NAN), "IBP kappa"),
        (lambda: vn.objectives.IBP(kappa=-0.1), "IBP kappa"),
        (lambda: vn.objectives.IBP(kappa=vn.schedules.Linear(end=0.5)), "ramp_epochs"),
        (
            lambda: vn.objectives.IBP(
                kappa=vn.schedules.Linear(1, 4, start=2.0, end=0.5)
            ),
            r"reaches values in \[0.5, 2\]",
        ),
        (lambda: vn.objectives.CROWNIBP(beta=2.0), "CROWNIBP beta"),
        (lambda: vn.objectives.CROWNIBP(kappa=INF), "CROWNIBP kappa"),
        (lambda: vn.objectives.CROWNIBP(beta=vn.schedules.Constant(-1.0)), "beta"),
        (lambda: vn.objectives.GaussianNoise(sigma=0.0), "sigma"),
        (lambda: vn.objectives.GaussianNoise(sigma=INF), "sigma"),
        (lambda: vn.objectives.GaussianNoise(sigma=True), "sigma"),
    ],
)
def test_bad_schedule_and_objective_arguments_raise(make, match):
    with pytest.raises(vn.InvalidInputError, match=match):
        make()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": vn.schedules.Constant(-1.0)}, r"epsilon.*>= 0"),
        (
            {"epsilon": vn.schedules.Linear(ramp_epochs=2, start=-0.1, end=0.1)},
            r"epsilon schedule.*\[-0.1, 0.1\]",
        ),
        ({"epsilon": vn.schedules.Linear(ramp_epochs=2)}, "has no end"),
        ({"epsilon": True}, "epsilon"),
        ({"epsilon": "0.1"}, "epsilon"),
        ({"robust": "pgd", "steps": -3}, "PGD steps"),
        ({"robust": "trades", "beta": INF}, "TRADES beta"),
        ({"robust": "crown", "beta": 1.5}, "CROWNIBP beta"),
    ],
)
def test_bad_compile_arguments_name_the_argument(kwargs, match):
    kwargs = {"robust": "ibp", "epsilon": 0.1, **kwargs}
    with pytest.raises(vn.InvalidInputError, match=match):
        mlp().compile("adam", **kwargs)


def test_arguments_are_validated_at_their_boundaries():
    # The edges that are meaningful are accepted...
    ramp = vn.schedules.SmoothRamp(warmup_epochs=1, ramp_epochs=3, end=0.5, mid=0.5)
    assert vn.objectives.IBP(kappa=ramp).kappa == ramp
    assert vn.objectives.IBP(kappa=1).kappa == 1.0
    assert vn.objectives.PGD(steps=np.int64(1), step_size=1e-3).steps == 1
    assert vn.objectives.TRADES(beta=0).beta == 0.0
    assert vn.objectives.CROWNIBP(beta=1, kappa=0).beta == 1.0
    model = mlp()
    model.compile("adam", robust="ibp", epsilon=vn.schedules.Linear(2, 3, end=0.0))
    assert model._robust.epsilon_target == 0.0
    # ... and the first values past them are not.
    with pytest.raises(vn.InvalidInputError, match="kappa"):
        vn.objectives.IBP(kappa=1.0 + 1e-9)
    with pytest.raises(vn.InvalidInputError, match="PGD step_size"):
        vn.objectives.PGD(step_size=0.0)
    with pytest.raises(vn.InvalidInputError, match="epsilon"):
        mlp().compile("adam", robust="ibp", epsilon=vn.schedules.Constant(-1e-9))
