"""``certify(dtype="float64")`` really certifies in double precision.

Small networks built so that float32 rounding moves the margin bound by a
quarter or more, while every weight, input and bound is a dyadic number that
float64 holds exactly: the float64 certificate must be the exact margin
computed by hand, and it differs observably from the float32 one.

    h = relu(x) (always active here),  y0 = h - 2^24,  y1 = b,  label 0
    over the L-inf ball of radius eps around x, the margin y0 - y1 is at
    least (x - eps) - 2^24 - b, exactly.

float32 holds the integers up to 2^24 and only the even ones above it, so
the ball's end ``x - eps`` and the bias difference ``-2^24 - b`` round:

* ``overstates``: eps = 1/2 + d, b = -1/4. At x = 2^24 the exact margin is
  -1/4 - d but float32 sees 0; at 2^24 + 4 it is 3.75 - d but float32 sees
  4. The float32 bound is too optimistic (the unsafe direction).
* ``misses-a-proof``: eps = 3/2 + d, b = 3/2. At x = 2^24 + 4 the exact
  margin is 1 - d, a proof, but float32 sees 0 and cannot verify; at
  2^24 + 2 it is -1 - d.

d = 2^-27 is below float32's resolution at these margins (1/4 - d is not a
float32), so a bound computed in float64 but narrowed to float32 anywhere on
the way misses the exact value too. The inputs that come near the exact bound
are real numbers float32 cannot hold, so no attack refutes any sample: the
verdicts come from the bounds.
"""

import numpy as np
import pytest

import verinet as vn
from verinet import layers as L

TWO24 = float(2**24)
D = 2.0**-27
METHODS = ("ibp", "crown", "crown-ibp")

# name: (b, eps, inputs, exact margin lower bounds, verified in float64)
CASES = {
    "overstates": (
        -0.25,
        0.5 + D,
        [TWO24, TWO24 + 4],
        [-0.25 - D, 3.75 - D],
        [False, True],
    ),
    "misses-a-proof": (
        1.5,
        1.5 + D,
        [TWO24 + 4, TWO24 + 2],
        [1.0 - D, -1.0 - D],
        [True, False],
    ),
}


def _case(name):
    b, eps, inputs, exact, verified = CASES[name]
    model = vn.Sequential([L.Input((1,)), L.Dense(1), L.ReLU(), L.Dense(2)])
    model.layers[0].set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    model.layers[2].set_weights(
        [np.array([[1.0, 0.0]], np.float32), np.array([-TWO24, b], np.float32)]
    )
    x = np.array(inputs, np.float32)[:, None]
    # Every weight and input is exact in float32, so the margins above are
    # those of the very network being certified.
    kernel, bias = model.layers[2].get_weights()
    assert kernel.tolist() == [[1.0, 0.0]] and bias.tolist() == [-TWO24, b]
    assert x.astype(np.float64).ravel().tolist() == inputs
    assert model.dtype == "float32"
    return model, x, eps, np.array(exact), np.array(verified)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASES)
def test_float64_certificate_is_the_exact_margin(name, method):
    model, x, eps, exact, verified = _case(name)
    y = np.zeros(len(x), int)
    report = vn.certify(model, x, y, eps, method=method, dtype="float64", verbose=0)
    np.testing.assert_allclose(report.margin_lower[:, 1], exact, atol=1e-9, rtol=0)
    assert np.all(np.isposinf(report.margin_lower[:, 0]))
    np.testing.assert_array_equal(report.predictions, y)  # clean inputs correct
    np.testing.assert_array_equal(report.verified, verified)
    np.testing.assert_array_equal(report.unknown, ~verified)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASES)
def test_float32_certificate_differs_observably(name, method):
    """The example is sensitive: float32 bounds miss the exact margins by a
    quarter or more, so a float64 run that silently computes in float32
    fails the test above (in ``misses-a-proof`` its verdict too)."""
    model, x, eps, exact, verified = _case(name)
    y = np.zeros(len(x), int)
    report = vn.certify(model, x, y, eps, method=method, dtype="float32", verbose=0)
    error = np.abs(report.margin_lower[:, 1] - exact)
    assert np.all(error >= 0.25), report.margin_lower[:, 1]
    if name == "misses-a-proof":
        assert not report.verified.any()


@pytest.mark.parametrize("method", METHODS)
def test_float64_bounds_and_margins_are_exact(method):
    """The same exact values through ``compute_bounds`` and ``margin_bounds``."""
    model, x, eps, exact, _ = _case("overstates")
    low, up = vn.compute_bounds(model, x, eps, method=method, dtype="float64")
    np.testing.assert_allclose(
        low, [[-0.5 - D, -0.25], [3.5 - D, -0.25]], atol=1e-9, rtol=0
    )
    np.testing.assert_allclose(
        up, [[0.5 + D, -0.25], [4.5 + D, -0.25]], atol=1e-9, rtol=0
    )
    margins = vn.margin_bounds(model, x, [0, 0], eps, method=method, dtype="float64")
    np.testing.assert_allclose(margins[:, 1], exact, atol=1e-9, rtol=0)
