"""PGD and FGSM: examples stay in the perturbation set and do break models."""

import keras
import numpy as np
import pytest
import torch
from keras import ops

import verinet as vn
from verinet import layers as L
from verinet.attacks import FGSM, PGD


@pytest.fixture(scope="module")
def data():
    (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
    return (x_train, y_train), (x_test[:120], y_test[:120])


@pytest.fixture(scope="module")
def model(data):
    (x_train, y_train), _ = data
    keras.utils.set_random_seed(1)
    net = vn.Sequential(
        [L.Input((8, 8, 1)), L.Flatten(), L.Dense(32), L.ReLU(), L.Dense(10)]
    )
    net.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    net.fit(x_train, y_train, epochs=10, batch_size=128, verbose=0)
    return net


def _accuracy(model, x, y):
    x = x if isinstance(x, torch.Tensor) else ops.convert_to_tensor(x)
    with torch.no_grad():
        logits = ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(logits.argmax(axis=1) == np.asarray(y)))


def _attacks(model, epsilon, norm, input_range):
    return {
        "pgd": PGD(model, epsilon, steps=8, norm=norm, input_range=input_range),
        "pgd-ce-restarts": PGD(
            model,
            epsilon,
            steps=4,
            restarts=2,
            loss="ce",
            norm=norm,
            input_range=input_range,
        ),
        "fgsm": FGSM(model, epsilon, norm=norm, input_range=input_range),
    }


ATTACK_NAMES = ["pgd", "pgd-ce-restarts", "fgsm"]


@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize(
    "norm, epsilon, input_range",
    [("linf", 0.1, (0.0, 1.0)), ("linf", 0.2, None), ("l2", 0.8, (0.0, 1.0))],
    ids=["linf-box", "linf-free", "l2-box"],
)
def test_examples_stay_in_the_perturbation_set(
    model, data, name, norm, epsilon, input_range
):
    _, (x, y) = data
    attack = _attacks(model, epsilon, norm, input_range)[name]
    x_adv = attack.perturb(x, y)
    assert isinstance(x_adv, np.ndarray)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert np.all(np.isfinite(x_adv))
    delta = (x_adv - x).reshape(len(x), -1)
    if norm == "linf":
        assert np.abs(delta).max() <= epsilon + 1e-6
    else:
        assert np.linalg.norm(delta, axis=1).max() <= epsilon * (1 + 1e-5)
    if input_range is not None:
        assert x_adv.min() >= input_range[0] and x_adv.max() <= input_range[1]
    # The attack actually moved the inputs.
    assert np.abs(delta).max() > 0.5 * epsilon / np.sqrt(
        delta.shape[1] if norm == "l2" else 1
    )


def test_pgd_lowers_accuracy(model, data):
    _, (x, y) = data
    clean = _accuracy(model, x, y)
    assert clean >= 0.85
    pgd = PGD(model, 0.1, steps=10, input_range=(0.0, 1.0)).perturb(x, y)
    fgsm = FGSM(model, 0.1, input_range=(0.0, 1.0)).perturb(x, y)
    pgd_acc, fgsm_acc = _accuracy(model, pgd, y), _accuracy(model, fgsm, y)
    assert pgd_acc <= clean - 0.3
    assert fgsm_acc < clean
    # Iterating helps: PGD is at least as strong as one FGSM step overall.
    assert pgd_acc <= fgsm_acc


def test_l2_attack_lowers_accuracy(model, data):
    _, (x, y) = data
    x_adv = PGD(model, 1.0, steps=10, norm="l2", input_range=(0, 1)).perturb(x, y)
    assert _accuracy(model, x_adv, y) < _accuracy(model, x, y) - 0.1


@pytest.mark.parametrize("cls", [PGD, FGSM])
def test_torch_in_torch_out(model, data, cls):
    _, (x, y) = data
    x_t = torch.from_numpy(x[:16].copy())
    before = x_t.clone()
    x_adv = cls(model, 0.1, input_range=(0.0, 1.0)).perturb(
        x_t, torch.from_numpy(y[:16])
    )
    assert isinstance(x_adv, torch.Tensor)
    assert x_adv.shape == x_t.shape and x_adv.dtype == x_t.dtype
    assert x_adv.device == x_t.device
    assert not x_adv.requires_grad
    assert torch.equal(x_t, before)  # the input is not modified in place
    assert (x_adv - x_t).abs().max().item() <= 0.1 + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    # numpy labels with a torch input work too.
    again = cls(model, 0.1, input_range=(0.0, 1.0)).perturb(x_t, y[:16])
    assert torch.equal(again, x_adv)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_dtype_is_kept(model, data, dtype):
    _, (x, y) = data
    xs = x[:10].astype(dtype)
    before = xs.copy()
    x_adv = PGD(model, 0.1, steps=3, input_range=(0, 1)).perturb(xs, list(y[:10]))
    assert isinstance(x_adv, np.ndarray)
    assert x_adv.dtype == np.dtype(dtype) and x_adv.shape == xs.shape
    np.testing.assert_array_equal(xs, before)
    assert np.abs(x_adv - xs).max() <= 0.1 + 1e-6


def test_torch_float64_input(model, data):
    _, (x, y) = data
    x_t = torch.from_numpy(x[:8].astype("float64"))
    x_adv = PGD(model, 0.1, steps=3).perturb(x_t, y[:8])
    assert x_adv.dtype == torch.float64
    assert (x_adv - x_t).abs().max().item() <= 0.1 + 1e-9


def test_same_seed_same_examples(model, data):
    _, (x, y) = data
    a = PGD(model, 0.1, steps=3, seed=7).perturb(x[:20], y[:20])
    b = PGD(model, 0.1, steps=3, seed=7).perturb(x[:20], y[:20])
    np.testing.assert_array_equal(a, b)
    assert callable(PGD(model, 0.1))
    np.testing.assert_array_equal(PGD(model, 0.1, steps=3, seed=7)(x[:20], y[:20]), a)


@pytest.mark.parametrize("cls", [PGD, FGSM])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_epsilon_zero_returns_the_input(model, data, cls, norm):
    _, (x, y) = data
    attack = cls(model, 0.0, norm=norm)
    np.testing.assert_array_equal(attack.perturb(x[:10], y[:10]), x[:10])
    x_t = torch.from_numpy(x[:10].copy())
    assert torch.equal(attack.perturb(x_t, y[:10]), x_t)


@pytest.mark.parametrize("cls", [PGD, FGSM])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"epsilon": float("inf")}, "epsilon"),
        ({"epsilon": "big"}, "epsilon"),
        ({"norm": "l1"}, "norm"),
        ({"norm": None}, "norm"),
        ({"loss": "hinge"}, "loss"),
        ({"input_range": (1.0, 0.0)}, "input_range"),
        ({"input_range": "0-1"}, "input_range"),
    ],
    ids=[
        "negative-epsilon",
        "nan-epsilon",
        "inf-epsilon",
        "string-epsilon",
        "norm-l1",
        "norm-none",
        "loss",
        "range-reversed",
        "range-string",
    ],
)
def test_bad_arguments_raise(model, cls, kwargs, match):
    arguments = {"epsilon": 0.1, **kwargs}
    epsilon = arguments.pop("epsilon")
    with pytest.raises(vn.InvalidInputError, match=match):
        cls(model, epsilon, **arguments)


def test_norm_name_is_case_insensitive(model):
    assert PGD(model, 0.1, norm="LINF").norm == "linf"
    assert FGSM(model, 0.1, norm="L2").norm == "l2"


def test_input_outside_range_is_refused(model, data):
    _, (x, y) = data
    attack = PGD(model, 0.05, steps=2, input_range=(0.5, 1.0))
    with pytest.raises(vn.InvalidInputError):
        attack.perturb(x[:4], y[:4])
