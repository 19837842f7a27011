"""Bad arguments raise verinet errors that name the problem; backend checks."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import verinet as vn
from verinet import layers as L

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model():
    return vn.Sequential(
        [L.Input((4, 4, 1)), L.Flatten(), L.Dense(8), L.ReLU(), L.Dense(3)],
        name="tiny",
    )


@pytest.fixture(scope="module")
def good():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, size=(5, 4, 4, 1)).astype("float32")
    y = np.array([0, 1, 2, 0, 1])
    return x, y


def _call(function, model, x, y, epsilon, **kwargs):
    if function == "compute_bounds":
        return vn.compute_bounds(model, x, epsilon, **kwargs)
    if function == "margin_bounds":
        return vn.margin_bounds(model, x, y, epsilon, **kwargs)
    return vn.certify(
        model, x, y, epsilon, verbose=0, attack_options={"steps": 1}, **kwargs
    )


FUNCTIONS = ["compute_bounds", "margin_bounds", "certify"]
WITH_LABELS = ["margin_bounds", "certify"]


def _object_array(x):
    out = np.empty(x.shape, dtype=object)
    out[...] = x
    return out


# (id, change(x, y) -> (x, y, epsilon, kwargs), message pattern)
X_CASES = [
    (
        "x-wrong-shape",
        lambda x, y: (x[..., 0], y, 0.1, {}),
        r"shape \(5, 4, 4\).*\(batch, 4, 4, 1\)",
    ),
    (
        "x-wrong-size",
        lambda x, y: (np.zeros((5, 4, 5, 1), "f4"), y, 0.1, {}),
        r"\(batch, 4, 4, 1\)",
    ),
    ("x-single-sample", lambda x, y: (x[0], y[:1], 0.1, {}), r"x\[None\]"),
    ("x-empty", lambda x, y: (x[:0], y[:0], 0.1, {}), "empty"),
    (
        "x-strings",
        lambda x, y: (x.astype(str), y, 0.1, {}),
        "must hold numbers",
    ),
    (
        "x-object",
        lambda x, y: (_object_array(x), y, 0.1, {}),
        "must hold numbers.*object",
    ),
    ("x-nan", lambda x, y: (np.where(x > 0.8, np.nan, x), y, 0.1, {}), "NaN"),
    (
        "x-inf",
        lambda x, y: (np.where(x > 0.8, np.inf, x), y, 0.1, {}),
        "infinite",
    ),
    ("epsilon-negative", lambda x, y: (x, y, -0.1, {}), r"epsilon.*>= 0.*-0\.1"),
    ("epsilon-nan", lambda x, y: (x, y, float("nan"), {}), "epsilon.*finite"),
    ("epsilon-inf", lambda x, y: (x, y, float("inf"), {}), "epsilon.*finite"),
    ("epsilon-string", lambda x, y: (x, y, "wide", {}), "epsilon must be a number"),
    ("epsilon-none", lambda x, y: (x, y, None, {}), "epsilon must be a number"),
    (
        "method-unknown",
        lambda x, y: (x, y, 0.1, {"method": "deeppoly"}),
        "Unknown method 'deeppoly'.*crown",
    ),
    (
        "norm-unknown",
        lambda x, y: (x, y, 0.1, {"norm": "l1"}),
        "Unknown norm 'l1'.*linf",
    ),
    (
        "range-reversed",
        lambda x, y: (x, y, 0.1, {"input_range": (1.0, 0.0)}),
        "input_range.*low <= high",
    ),
    (
        "range-not-pair",
        lambda x, y: (x, y, 0.1, {"input_range": (0.0, 0.5, 1.0)}),
        "input_range",
    ),
    (
        "range-nan",
        lambda x, y: (x, y, 0.1, {"input_range": (0.0, float("nan"))}),
        "input_range",
    ),
    (
        "x-outside-range",
        lambda x, y: (x, y, 0.1, {"input_range": (0.2, 0.8)}),
        "outside input_range",
    ),
]

Y_CASES = [
    (
        "y-too-large",
        lambda x, y: (x, np.array([0, 1, 2, 3, 0]), 0.1, {}),
        "labels 0..2",
    ),
    ("y-negative", lambda x, y: (x, np.array([0, -1, 2, 0, 0]), 0.1, {}), "labels"),
    ("y-one-hot", lambda x, y: (x, np.eye(3)[y], 0.1, {}), "one-hot"),
    ("y-too-short", lambda x, y: (x, y[:3], 0.1, {}), "5 integer labels"),
    ("y-too-long", lambda x, y: (x, np.append(y, 0), 0.1, {}), "5 integer labels"),
    ("y-column", lambda x, y: (x, y[:, None], 0.1, {}), "5 integer labels"),
    ("y-fractional", lambda x, y: (x, y + 0.5, 0.1, {}), "integer labels"),
    ("y-strings", lambda x, y: (x, y.astype(str), 0.1, {}), "integer labels"),
]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    "change, match", [c[1:] for c in X_CASES], ids=[c[0] for c in X_CASES]
)
def test_bad_input_is_named(model, good, function, change, match):
    x, y, epsilon, kwargs = change(*good)
    with pytest.raises(vn.InvalidInputError, match=match):
        _call(function, model, x, y, epsilon, **kwargs)


@pytest.mark.parametrize("function", WITH_LABELS)
@pytest.mark.parametrize(
    "change, match", [c[1:] for c in Y_CASES], ids=[c[0] for c in Y_CASES]
)
def test_bad_labels_are_named(model, good, function, change, match):
    x, y, epsilon, kwargs = change(*good)
    with pytest.raises(vn.InvalidInputError, match=match):
        _call(function, model, x, y, epsilon, **kwargs)


def test_float_integer_labels_are_accepted(model, good):
    x, y = good
    as_int = vn.margin_bounds(model, x, y, 0.1)
    as_float = vn.margin_bounds(model, x, y.astype("float64"), 0.1)
    np.testing.assert_array_equal(as_int, as_float)


@pytest.mark.parametrize(
    "C, match",
    [
        (np.ones((5, 2)), "C must have shape"),
        (np.ones((4, 2, 3)), r"batch=5"),
        (np.ones((5, 2, 4)), r"classes=3"),
        (np.ones((5, 2, 3, 1)), "C must have shape"),
    ],
    ids=["2d", "wrong-batch", "wrong-classes", "4d"],
)
def test_bad_specification_matrix(model, good, C, match):
    x, _ = good
    with pytest.raises(vn.InvalidInputError, match=match):
        vn.compute_bounds(model, x, 0.1, C=C)


def test_specification_matrix_is_applied(model, good):
    x, _ = good
    C = np.zeros((5, 1, 3), "float32")
    C[:, 0, 0], C[:, 0, 1] = 1.0, -1.0
    low, up = vn.compute_bounds(model, x, 0.0, method="crown", C=C)
    out = vn.compute_bounds(model, x, 0.0, method="crown")[0]
    np.testing.assert_allclose(low[:, 0], out[:, 0] - out[:, 1], atol=1e-5)
    np.testing.assert_allclose(up[:, 0], out[:, 0] - out[:, 1], atol=1e-5)


def test_certify_unknown_attack(model, good):
    x, y = good
    with pytest.raises(vn.InvalidInputError, match="Unknown attack 'cw'"):
        vn.certify(model, x, y, 0.1, attack="cw", verbose=0)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_unknown_dtype(model, good, function):
    x, y = good
    with pytest.raises(vn.InvalidInputError, match="dtype"):
        _call(function, model, x, y, 0.1, dtype="float16")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_method_and_norm_names_are_case_insensitive(model, good, function):
    x, y = good
    upper = _call(function, model, x, y, 0.05, method="CROWN", norm="LinF")
    lower = _call(function, model, x, y, 0.05, method="crown", norm="linf")
    if function == "certify":
        np.testing.assert_array_equal(upper.margin_lower, lower.margin_lower)
    elif function == "margin_bounds":
        np.testing.assert_array_equal(upper, lower)
    else:
        np.testing.assert_array_equal(upper[0], lower[0])


def test_errors_are_value_errors(model, good):
    """InvalidInputError is both a VerinetError and a ValueError."""
    x, _ = good
    with pytest.raises(ValueError):
        vn.compute_bounds(model, x, -1.0)
    with pytest.raises(vn.VerinetError):
        vn.compute_bounds(model, x, -1.0)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_numeric_string_epsilon_is_refused(model, good, function):
    x, y = good
    with pytest.raises(vn.InvalidInputError, match="epsilon"):
        _call(function, model, x, y, "0.1")


@pytest.mark.parametrize("batch_size", [0, -1])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_non_positive_batch_size_is_refused(model, good, function, batch_size):
    x, y = good
    with pytest.raises(vn.InvalidInputError, match="batch_size"):
        _call(function, model, x, y, 0.1, batch_size=batch_size)


# --- backend selection -------------------------------------------------------------


def _run(code, **env_changes):
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_other_keras_backend_is_refused():
    code = (
        "import sys\n"
        "try:\n"
        "    import verinet\n"
        "except Exception as exc:\n"
        "    print(type(exc).__module__, type(exc).__name__)\n"
        "    print(exc)\n"
        "    print('keras imported:', 'keras' in sys.modules)\n"
        "else:\n"
        "    print('imported')\n"
    )
    result = _run(code, KERAS_BACKEND="jax")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "verinet.errors BackendError"
    assert "torch" in lines[1] and "jax" in lines[1]
    # The check happens before Keras is imported with the wrong backend.
    assert lines[-1] == "keras imported: False"


def test_unset_backend_selects_torch():
    code = (
        "import os\n"
        "assert 'KERAS_BACKEND' not in os.environ\n"
        "import verinet, keras\n"
        "print(keras.backend.backend())\n"
        "print(os.environ['KERAS_BACKEND'])\n"
    )
    result = _run(code, KERAS_BACKEND=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torch", "torch"]


def test_backend_error_is_exported():
    assert issubclass(vn.BackendError, RuntimeError)
    assert issubclass(vn.BackendError, vn.VerinetError)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_BACKEND", "tensorflow")
        from verinet import _backend

        with pytest.raises(vn.BackendError, match="torch"):
            _backend.ensure_torch_backend()


def test_dense_with_lora_is_refused_by_a_verinet_error():
    with pytest.raises(vn.InvalidInputError, match="LoRA"):
        L.Dense(3, lora_rank=2)


def test_compute_bounds_defaults_to_crown_like_certify(model, good):
    """One default everywhere: ``compute_bounds``, ``model.bounds`` and
    ``certify`` all use CROWN unless told otherwise."""
    x = good[0]
    default = vn.compute_bounds(model, x, 0.1)
    crown = vn.compute_bounds(model, x, 0.1, method="crown")
    ibp = vn.compute_bounds(model, x, 0.1, method="ibp")
    np.testing.assert_array_equal(default[0], crown[0])
    np.testing.assert_array_equal(default[1], crown[1])
    assert np.mean(ibp[1] - ibp[0]) > np.mean(crown[1] - crown[0])
    for fn in (vn.certify, vn.margin_bounds, vn.Sequential.bounds):
        assert inspect.signature(fn).parameters["method"].default == "crown"
