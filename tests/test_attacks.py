"""PGD, TargetedPGD and FGSM: examples stay in the perturbation set and do
break models; TargetedPGD (certify's default) finds what untargeted PGD misses."""

import re

import keras
import numpy as np
import pytest
import torch
from keras import ops

import verinet as vn
from verinet import layers as L
from verinet.attacks import FGSM, PGD, TargetedPGD
from verinet.attacks.pgd import _margin_loss


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
        "targeted": TargetedPGD(model, epsilon, norm=norm, input_range=input_range),
        "targeted-all-4-starts-step": TargetedPGD(
            model,
            epsilon,
            targets=None,
            restarts=4,
            steps=6,
            schedule="step",
            early_exit=False,
            norm=norm,
            input_range=input_range,
        ),
    }


ATTACK_NAMES = [
    "pgd",
    "pgd-ce-restarts",
    "fgsm",
    "targeted",
    "targeted-all-4-starts-step",
]


@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize(
    "norm, epsilon, input_range",
    [
        ("linf", 0.1, (0.0, 1.0)),
        ("linf", 0.2, None),
        ("l2", 0.8, (0.0, 1.0)),
        ("l2", 1.5, None),
    ],
    ids=["linf-box", "linf-free", "l2-box", "l2-free"],
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


@pytest.mark.parametrize("cls", [PGD, FGSM, TargetedPGD])
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
    # Calling the attack is perturb; the seed really drives the random starts.
    np.testing.assert_array_equal(PGD(model, 0.1, steps=3, seed=7)(x[:20], y[:20]), a)
    other = PGD(model, 0.1, steps=3, seed=8).perturb(x[:20], y[:20])
    assert not np.array_equal(other, a)


def test_targeted_same_seed_same_examples(model, data):
    _, (x, y) = data
    attack = TargetedPGD(model, 0.1, restarts=3, steps=4, early_exit=False, seed=7)
    a = attack.perturb(x[:20], y[:20])
    np.testing.assert_array_equal(attack(x[:20], y[:20]), a)
    np.testing.assert_array_equal(
        TargetedPGD(model, 0.1, restarts=3, steps=4, early_exit=False, seed=7).perturb(
            x[:20], y[:20]
        ),
        a,
    )


@pytest.mark.parametrize("cls", [PGD, FGSM, TargetedPGD])
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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"norm": "l1"}, "norm"),
        ({"input_range": (1.0, 0.0)}, "input_range"),
        ({"targets": 0}, "targets"),
        ({"targets": 2.5}, "targets"),
        ({"targets": True}, "targets"),
        ({"restarts": 0}, "restarts"),
        ({"steps": 0}, "steps"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"schedule": "linear"}, "schedule"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_targeted_bad_arguments_raise(model, kwargs, match):
    arguments = {"epsilon": 0.1, **kwargs}
    epsilon = arguments.pop("epsilon")
    with pytest.raises(vn.InvalidInputError, match=match):
        TargetedPGD(model, epsilon, **arguments)


NAN, INF = float("nan"), float("inf")

# Every attack's own options are refused alike, naming the attack, the
# argument and the value (as the training objectives' options are).
BAD_OPTIONS = [
    ({"steps": -3}, "steps must be an int >= 1, got -3."),
    ({"steps": 0}, "steps must be an int >= 1, got 0."),
    ({"steps": 2.5}, "steps must be an int >= 1, got 2.5 (float)."),
    ({"steps": True}, "steps must be an int >= 1, got True (bool)."),
    ({"steps": "10"}, "steps must be an int >= 1, got '10' (str)."),
    ({"restarts": 0}, "restarts must be an int >= 1, got 0."),
    ({"restarts": -1}, "restarts must be an int >= 1, got -1."),
    ({"restarts": False}, "restarts must be an int >= 1, got False (bool)."),
    ({"restarts": 2.0}, "restarts must be an int >= 1, got 2.0 (float)."),
    ({"step_size": NAN}, "step_size must be a finite number > 0 (or None), got nan."),
    ({"step_size": INF}, "step_size must be a finite number > 0 (or None), got inf."),
    ({"step_size": 0.0}, "step_size must be a finite number > 0 (or None), got 0.0."),
    ({"step_size": -0.1}, "step_size must be a finite number > 0 (or None), got -0.1"),
    ({"step_size": True}, "step_size must be a finite number > 0 (or None), got True"),
    (
        {"step_size": "0.1"},
        "step_size must be a finite number > 0 (or None), got '0.1'",
    ),
    ({"seed": -1}, "seed must be an int >= 0, got -1."),
    ({"seed": 0.5}, "seed must be an int >= 0, got 0.5 (float)."),
    ({"seed": True}, "seed must be an int >= 0, got True (bool)."),
    ({"seed": None}, "seed must be an int >= 0, got None (NoneType)."),
]


@pytest.mark.parametrize("cls", [PGD, TargetedPGD])
@pytest.mark.parametrize(
    "kwargs, message", BAD_OPTIONS, ids=[str(k) for k, _ in BAD_OPTIONS]
)
def test_attack_options_are_validated(model, cls, kwargs, message):
    with pytest.raises(vn.InvalidInputError) as info:
        cls(model, 0.1, **kwargs)
    assert str(info.value).startswith(f"{cls.__name__} {message}")


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (PGD, {"loss": "hinge"}, "Unknown PGD loss 'hinge'"),
        (FGSM, {"loss": "hinge"}, "Unknown FGSM loss 'hinge'"),
        (TargetedPGD, {"schedule": "linear"}, "Unknown TargetedPGD schedule"),
        (TargetedPGD, {"targets": 0}, "TargetedPGD targets must be an int >= 1"),
        (TargetedPGD, {"max_rows": 0}, "TargetedPGD max_rows must be an int >= 1"),
        (TargetedPGD, {"max_rows": 1.5}, "TargetedPGD max_rows must be an int >= 1"),
    ],
)
def test_choices_and_other_options_name_the_attack(model, cls, kwargs, message):
    with pytest.raises(vn.InvalidInputError, match=re.escape(message)):
        cls(model, 0.1, **kwargs)


def test_good_attack_options_are_kept(model):
    attack = PGD(model, 0.1, steps=np.int64(4), restarts=np.int32(2), seed=np.int64(3))
    assert (attack.steps, attack.restarts, attack.seed) == (4, 2, 3)
    assert all(type(v) is int for v in (attack.steps, attack.restarts, attack.seed))
    assert attack.step_size == pytest.approx(2.5 * 0.1 / 4)  # the default
    attack = PGD(model, 0.1, step_size=np.float32(0.02))
    assert attack.step_size == pytest.approx(0.02) and type(attack.step_size) is float
    assert PGD(model, 0.0).step_size == 0.0  # no ball, no step: still allowed
    targeted = TargetedPGD(model, 0.1, steps=np.int64(3), step_size=0.01)
    assert (targeted.steps, targeted.step_size) == (3, 0.01)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_fgsm_is_one_full_step_by_construction(model, epsilon):
    attack = FGSM(model, epsilon)
    assert (attack.steps, attack.restarts, attack.step_size) == (1, 1, epsilon)
    assert attack.random_start is False
    with pytest.raises(TypeError):
        FGSM(model, epsilon, steps=3)  # not an FGSM option


def test_certify_attack_options_errors_name_the_attack(model, data):
    _, (x, y) = data
    kwargs = {"input_range": (0.0, 1.0), "verbose": 0}
    with pytest.raises(vn.InvalidInputError, match="^TargetedPGD steps must be"):
        vn.certify(model, x[:4], y[:4], 0.1, attack_options={"steps": 0}, **kwargs)
    with pytest.raises(vn.InvalidInputError, match="^PGD restarts must be"):
        vn.certify(
            model,
            x[:4],
            y[:4],
            0.1,
            attack_options={"loss": "ce", "restarts": 0},
            **kwargs,
        )


def test_norm_name_is_case_insensitive(model):
    assert PGD(model, 0.1, norm="LINF").norm == "linf"
    assert FGSM(model, 0.1, norm="L2").norm == "l2"


def test_input_outside_range_is_refused(model, data):
    _, (x, y) = data
    attack = PGD(model, 0.05, steps=2, input_range=(0.5, 1.0))
    with pytest.raises(vn.InvalidInputError):
        attack.perturb(x[:4], y[:4])


# -- TargetedPGD: what it finds and what it keeps ------------------------------


def _margins(model, x_adv, y):
    """``max_{j != y} f_j - f_y`` per sample: positive means misclassified."""
    x_adv = ops.convert_to_tensor(np.asarray(x_adv, dtype="float32"))
    with torch.no_grad():
        logits = model(x_adv, training=False)
    labels = ops.convert_to_tensor(np.asarray(y), dtype="int64")
    return ops.convert_to_numpy(_margin_loss(logits, labels))


def _decoy_model():
    """A linear 16-input, 3-class model with a decoy runner-up (worked by hand).

    With ``s = sum(x) - 8`` (``s = 0`` at the centre ``x = 0.5``):
    ``f0 = 1``, ``f1 = 0.9 - 0.05 s``, ``f2 = 0.2 + 0.6 s``. In the L∞ ball of
    radius 0.1 around the centre, ``s`` ranges over ``[-1.6, 1.6]``:

    * ``f1 - f0 = -0.1 - 0.05 s <= -0.02``: the runner-up never wins;
    * ``f2 - f0 = -0.8 + 0.6 s`` is positive for ``s > 4/3`` and reaches
      ``+0.16`` at the all-high vertex ``x = 0.6``: a real adversarial example.

    Untargeted margin PGD follows the highest wrong class, ``f1``, whose
    gradient points to the all-low vertex (``f2 = -0.76`` there); ``f2``
    overtakes ``f1`` only where ``s > 0.7 / 0.65 = 1.08``, which a random start
    (a sum of 16 uniforms on ``[-0.1, 0.1]``, standard deviation 0.23) reaches
    with probability below 1e-5.
    """
    net = vn.Sequential([L.Input((16,)), L.Dense(3)])
    kernel = np.zeros((16, 3), dtype="float32")
    kernel[:, 1], kernel[:, 2] = -0.05, 0.6
    net.layers[-1].set_weights([kernel, np.array([1.0, 1.3, -4.6], "float32")])
    return net


def test_decoy_model_is_what_the_docstring_says():
    net = _decoy_model()
    x = np.full((3, 16), 0.5, dtype="float32")
    x[1], x[2] = 0.4, 0.6
    with torch.no_grad():
        logits = ops.convert_to_numpy(net(x, training=False))
    np.testing.assert_allclose(
        logits,
        [[1.0, 0.9, 0.2], [1.0, 0.98, -0.76], [1.0, 0.82, 1.16]],
        atol=1e-5,
    )


def test_targeted_pgd_finds_what_untargeted_pgd_misses():
    net = _decoy_model()
    x, y = np.full((1, 16), 0.5, dtype="float32"), np.array([0])
    # certify's former default attack, and PGD from the clean point.
    old_default = PGD(net, 0.1, steps=30, restarts=2, input_range=(0, 1))
    assert _margins(net, old_default.perturb(x, y), y)[0] < 0
    stuck = PGD(net, 0.1, steps=50, random_start=False, input_range=(0, 1))
    x_stuck = stuck.perturb(x, y)
    np.testing.assert_allclose(x_stuck, 0.4, atol=1e-6)  # the decoy's vertex
    assert _margins(net, x_stuck, y)[0] == pytest.approx(-0.02, abs=1e-5)
    # Class 2 ranks first by its reachable margin (0.16 against -0.02) though
    # its clean logit is last; its gradient vertex is the all-high corner.
    for targets in (1, 2, None):
        attack = TargetedPGD(net, 0.1, targets=targets, input_range=(0, 1))
        x_adv = attack.perturb(x, y)
        np.testing.assert_allclose(x_adv, 0.6, atol=1e-6)
        assert _margins(net, x_adv, y)[0] == pytest.approx(0.16, abs=1e-5)


def test_certify_default_attack_falsifies_the_decoy():
    net = _decoy_model()
    x, y = np.full((1, 16), 0.5, dtype="float32"), np.array([0])
    report = vn.certify(net, x, y, 0.1, input_range=(0, 1), verbose=0)
    assert report.falsified[0] and not report.unknown[0]
    np.testing.assert_allclose(report.adversarial_examples[0], 0.6, atol=1e-6)
    old = PGD(net, 0.1, steps=30, restarts=2, input_range=(0, 1))
    before = vn.certify(net, x, y, 0.1, input_range=(0, 1), verbose=0, attack=old)
    assert before.unknown[0]


@pytest.mark.parametrize(
    "norm, epsilon", [("linf", 0.05), ("linf", 0.1), ("l2", 0.3), ("l2", 0.8)]
)
def test_targeted_breaks_every_sample_the_old_default_breaks(
    model, data, norm, epsilon
):
    _, (x, y) = data
    kwargs = {"norm": norm, "input_range": (0.0, 1.0)}
    old = _margins(model, PGD(model, epsilon, steps=30, restarts=2, **kwargs)(x, y), y)
    new = _margins(model, TargetedPGD(model, epsilon, **kwargs).perturb(x, y), y)
    assert (old > 0).any() and (old <= 0).any()
    assert np.all(new[old > 0] > 0)


@pytest.mark.parametrize("norm, epsilon", [("linf", 0.05), ("l2", 0.5)])
def test_more_targets_and_restarts_never_weaken(model, data, norm, epsilon):
    # Restart 0 of target 1 is the same run in every setting, and the
    # strongest point over all runs and the clean input is kept.
    _, (x, y) = data

    def margins(targets, restarts):
        attack = TargetedPGD(
            model,
            epsilon,
            targets=targets,
            restarts=restarts,
            steps=5,
            norm=norm,
            input_range=(0.0, 1.0),
            early_exit=False,
        )
        return _margins(model, attack.perturb(x, y), y)

    clean = _margins(model, x, y)
    base = margins(1, 1)
    assert np.all(base >= clean - 1e-6)
    assert np.all(base > clean + 1e-3)  # every sample was pushed
    for more in (margins(1, 3), margins(3, 1), margins(None, 3)):
        assert np.all(more >= base - 1e-5)


@pytest.mark.parametrize("norm, epsilon", [("linf", 0.05), ("l2", 0.5)])
def test_early_exit_keeps_found_examples_and_changes_no_other(
    model, data, norm, epsilon
):
    _, (x, y) = data
    rows = {True: 0, False: 0}

    def run(early_exit):
        def counting(inputs, training=False):
            rows[early_exit] += inputs.shape[0]
            return model(inputs, training=training)

        attack = TargetedPGD(
            counting,
            epsilon,
            restarts=3,
            norm=norm,
            input_range=(0.0, 1.0),
            early_exit=early_exit,
        )
        return attack.perturb(x, y)

    fast, full = run(True), run(False)
    m_fast, m_full = _margins(model, fast, y), _margins(model, full, y)
    found = m_fast > 0
    assert found.any() and (~found).any()
    # The same samples are broken; the others ran exactly the same search.
    np.testing.assert_array_equal(found, m_full > 0)
    np.testing.assert_allclose(fast[~found], full[~found], atol=1e-6)
    # Without early exit the search goes on and keeps the stronger points.
    assert np.all(m_full[found] >= m_fast[found] - 1e-6)
    assert np.any(m_full[found] > m_fast[found] + 1e-3)
    assert rows[True] < 0.9 * rows[False]


def test_step_length_schedules(model):
    def lengths(schedule):
        attack = TargetedPGD(model, 0.1, steps=8, schedule=schedule)
        return np.array([attack.step_length(s) for s in range(8)])

    np.testing.assert_allclose(lengths("constant"), 0.05)
    np.testing.assert_allclose(lengths("step"), [0.05] * 4 + [0.025] * 2 + [0.0125] * 2)
    cosine = lengths("cosine")
    assert cosine[0] == pytest.approx(0.05)
    assert np.all(np.diff(cosine) < 0) and cosine[-1] > 0
    assert TargetedPGD(model, 0.1, step_size=0.02).step_length(0) == 0.02


# -- certify's default attack ------------------------------------------------


@pytest.mark.parametrize(
    "norm, epsilon, strictly_more",
    [("linf", 0.05, False), ("linf", 0.1, False), ("l2", 0.8, True)],
)
def test_certify_default_falsifies_at_least_the_old_default(
    model, data, norm, epsilon, strictly_more
):
    _, (x, y) = data
    kwargs = {"norm": norm, "input_range": (0.0, 1.0), "verbose": 0}
    new = vn.certify(model, x, y, epsilon, **kwargs)
    old_attack = PGD(
        model, epsilon, steps=30, restarts=2, norm=norm, input_range=(0.0, 1.0)
    )
    old = vn.certify(model, x, y, epsilon, attack=old_attack, **kwargs)
    assert new.attack == "pgd"
    np.testing.assert_array_equal(new.verified, old.verified)
    assert np.all(new.falsified[old.falsified])
    if strictly_more:
        assert new.falsified.sum() > old.falsified.sum()
    broken = new.falsified & (new.predictions == y)
    assert _margins(model, new.adversarial_examples[broken], y[broken]).min() > 0


def test_certify_attack_options(model, data):
    _, (x, y) = data
    x, y = x[:40], y[:40]
    kwargs = {"input_range": (0.0, 1.0), "verbose": 0}
    targeted = vn.certify(
        model, x, y, 0.1, attack_options={"targets": 1, "steps": 4}, **kwargs
    )
    # Options only the untargeted PGD takes still select it, as before.
    untargeted = vn.certify(
        model, x, y, 0.1, attack_options={"loss": "ce", "steps": 4}, **kwargs
    )
    fgsm = vn.certify(model, x, y, 0.1, attack="fgsm", **kwargs)
    for report in (targeted, untargeted, fgsm):
        assert report.falsified.sum() > (report.predictions != y).sum()
    with pytest.raises(vn.InvalidInputError, match="targets"):
        vn.certify(model, x, y, 0.1, attack_options={"targets": 0}, **kwargs)


def test_max_rows_bounds_every_model_call(model, data):
    _, (x, y) = data
    sizes = []

    def counting(inputs, training=False):
        sizes.append(inputs.shape[0])
        return model(inputs, training=training)

    kwargs = {"restarts": 1, "steps": 4, "input_range": (0.0, 1.0)}
    whole = TargetedPGD(model, 0.1, **kwargs).perturb(x, y)
    chunked = TargetedPGD(counting, 0.1, max_rows=20, **kwargs).perturb(x, y)
    # The clean pass sees the whole batch; every attack call fits the budget.
    assert sizes[0] == len(x) and max(sizes[1:]) <= 20 and len(sizes) > 10
    # Without random starts the chunks run the very same search.
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_ascent_climbs_to_the_best_point_of_the_set():
    """On ``-||z - t||^2`` the projected ascent walks to ``t``'s projection
    onto the ball, evaluates ``steps + 1`` iterates, and stops on request."""
    from verinet.attacks.pgd import ascent
    from verinet.bounds.perturbation import L2Ball, LinfBall

    x = torch.zeros(3, 4, dtype=torch.float64)
    target = torch.tensor([[2.0, 0, 0, 0], [0, -3.0, 0, 0], [0.01, 0, 0, 0]]).double()
    calls = []

    def objective(z):
        calls.append(1)
        return -((z - target) ** 2).sum(1), None

    for ball, expected in (
        (L2Ball(0.5), [[0.5, 0, 0, 0], [0, -0.5, 0, 0], [0.01, 0, 0, 0]]),
        (LinfBall(0.5), [[0.5, 0, 0, 0], [0, -0.5, 0, 0], [0.01, 0, 0, 0]]),
    ):
        calls.clear()
        step = 0.01 if isinstance(ball, L2Ball) else 0.002
        last = None
        for z, _ in ascent(objective, x, x, ball, 400, step):
            last = z
        assert len(calls) == 401
        np.testing.assert_allclose(last.numpy(), expected, atol=0.011)
    calls.clear()
    stopped = list(
        ascent(objective, x, x, L2Ball(0.5), 50, 0.01, stop=lambda: len(calls) >= 3)
    )
    assert len(stopped) == 3


@pytest.mark.parametrize("attack", [PGD, TargetedPGD, FGSM])
def test_per_feature_epsilon_moves_only_the_perturbed_features(model, data, attack):
    """An array epsilon perturbs each pixel within its own radius (0: never)
    and the per-feature input range; it still breaks the model."""
    _, (x, y) = data
    x, y = x[:60], y[:60]
    eps = np.zeros((8, 8, 1))
    eps[2:6, 2:6] = 0.5  # the centre of the image only
    high = np.full((8, 8, 1), 1.0)
    high[3, 3] = 0.4
    kwargs = {"steps": 10} if attack is not FGSM else {}
    x_in = np.minimum(x, high)
    x_adv = attack(model, eps, input_range=(0.0, high), **kwargs).perturb(x_in, y)
    delta = np.abs(x_adv.astype(np.float64) - x_in)
    assert np.all(delta <= eps * (1 + 1e-6) + 1e-7)
    assert np.all(delta[:, eps == 0] == 0)
    assert np.all(x_adv <= high + 1e-7) and np.all(x_adv >= 0)
    pred = keras.ops.convert_to_numpy(model(x_adv)).argmax(1)
    clean = keras.ops.convert_to_numpy(model(x_in)).argmax(1)
    assert np.mean(pred != y) > np.mean(clean != y) + 0.1


def test_per_feature_epsilon_is_checked(model):
    with pytest.raises(vn.InvalidInputError, match="broadcast"):
        PGD(model, np.zeros((3, 3)))
    with pytest.raises(vn.InvalidInputError, match="linf"):
        PGD(model, np.full((8, 8, 1), 0.1), norm="l2")
    with pytest.raises(vn.InvalidInputError, match=">= 0"):
        PGD(model, np.full((8, 8, 1), -0.1))
