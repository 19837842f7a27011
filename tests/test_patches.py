"""The patches form of linear bounds and the memory-bounded back-substitution.

* ``Patches`` against a dense reference built entry by entry in numpy;
* CROWN with patches equals CROWN with dense coefficients on random CNNs
  (stride, padding, rectangular kernels, BN, pooling, residual blocks), and
  both are sound under sampling + PGD;
* a memory budget too small for one chunk still gives identical bounds, and
  one too small for a single row raises ``MemoryBudgetError``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from soundness_utils import check_soundness, random_inputs, randomize_weights
from test_soundness_stacks import build_conv, conv_specs

import verinet as vn
from verinet import layers
from verinet.bounds import methods
from verinet.bounds.methods import CROWN
from verinet.bounds.patches import Patches, add_linear


def _dense_reference(coeffs, rows, stride, offset, shape):
    """Entry-by-entry placement of each row's window on the node grid."""
    batch, n_rows, kh, kw, _ = coeffs.shape
    height, width, channels = shape
    dense = np.zeros((batch, n_rows, height, width, channels), coeffs.dtype)
    for r, (h, w) in enumerate(rows):
        for i in range(kh):
            for j in range(kw):
                y = h * stride[0] - offset[0] + i
                z = w * stride[1] - offset[1] + j
                if 0 <= y < height and 0 <= z < width:
                    dense[:, r, y, z, :] = coeffs[:, r, i, j, :]
    return dense


@st.composite
def geometries(draw):
    height, width = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    channels = draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # Zoo layers give offsets >= 0; negative ones test the frame arithmetic.
    offset = (draw(st.integers(-2, 3)), draw(st.integers(-2, 3)))
    window = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    n_rows = draw(st.integers(1, 6))
    rows = [
        (draw(st.integers(0, height)), draw(st.integers(0, width)))
        for _ in range(n_rows)
    ]
    return (height, width, channels), stride, offset, window, np.array(rows)


def _random_patches(geometry, rng, batch=2):
    shape, stride, offset, window, rows = geometry
    coeffs = rng.standard_normal((batch, len(rows), *window, shape[2]))
    coeffs = coeffs.astype(np.float32)
    # Honour the invariant: entries outside the node are zero.
    mask = _dense_reference(np.ones_like(coeffs), rows, stride, offset, shape)
    probe = Patches(keras.ops.convert_to_tensor(coeffs), rows, stride, offset, shape)
    inside = keras.ops.convert_to_numpy(
        probe.unfold(keras.ops.convert_to_tensor(mask[:, 0]))
    )
    coeffs = coeffs * (inside != 0)
    return probe.replace(keras.ops.convert_to_tensor(coeffs)), coeffs


def _assert_sum_is_dense_sum(a, b, stays_patches):
    """``add_linear(a, b)`` keeps the patches form (or turns dense) as told,
    and equals the sum of the two dense forms."""
    total = add_linear(a, b)
    assert isinstance(total, Patches) == stays_patches
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(total.to_dense() if stays_patches else total),
        keras.ops.convert_to_numpy(a.to_dense())
        + keras.ops.convert_to_numpy(b.to_dense()),
        rtol=1e-6,
        atol=1e-6,
    )


@given(geometry=geometries(), seed=st.integers(0, 2**16))
def test_to_dense_and_unfold_match_an_entrywise_reference(geometry, seed):
    rng = np.random.default_rng(seed)
    patches, coeffs = _random_patches(geometry, rng)
    shape, stride, offset, _, rows = geometry
    expected = _dense_reference(coeffs, rows, stride, offset, shape)
    dense = keras.ops.convert_to_numpy(patches.to_dense())
    np.testing.assert_array_equal(dense, expected)
    # <row, t> is the same whether t is gathered at the window or the row is
    # spread on the grid.
    t = rng.standard_normal((2, *shape)).astype(np.float32)
    gathered = keras.ops.convert_to_numpy(
        patches.unfold(keras.ops.convert_to_tensor(t))
    )
    by_window = (coeffs * gathered).sum(axis=(2, 3, 4))
    by_grid = (expected * t[:, None]).sum(axis=(2, 3, 4))
    np.testing.assert_allclose(by_window, by_grid, rtol=1e-5, atol=1e-5)


@given(geometry=geometries(), seed=st.integers(0, 2**16), data=st.data())
def test_adding_patches_with_different_windows_matches_dense(geometry, seed, data):
    rng = np.random.default_rng(seed)
    shape, stride, offset, window, rows = geometry
    other = (
        shape,
        stride,
        (data.draw(st.integers(-2, 3)), data.draw(st.integers(-2, 3))),
        (data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))),
        rows,
    )
    a, _ = _random_patches(geometry, rng)
    b, _ = _random_patches(other, rng)
    _assert_sum_is_dense_sum(a, b, stays_patches=True)


@pytest.mark.parametrize("offsets", [((-2, -1), (1, 1)), ((1, 0), (-2, -2))])
def test_adding_patches_with_offsets_of_both_signs_matches_dense(offsets):
    """A window that starts past its row's position (negative offset) next to
    one that starts before it: the common frame must hold both whole."""
    rows = np.array([(0, 0), (1, 2), (3, 1)])
    shape = (6, 6, 2)
    rng = np.random.default_rng(0)
    a, _ = _random_patches((shape, (1, 1), offsets[0], (2, 2), rows), rng)
    b, _ = _random_patches((shape, (1, 1), offsets[1], (3, 3), rows), rng)
    _assert_sum_is_dense_sum(a, b, stays_patches=True)


@given(geometry=geometries(), seed=st.integers(0, 2**16), data=st.data())
def test_adding_misaligned_patches_falls_back_to_dense(geometry, seed, data):
    """Two patches on the same node but another stride or other row positions
    cannot share a window frame: their sum must be the dense sum."""
    rng = np.random.default_rng(seed)
    shape, stride, offset, window, rows = geometry
    if data.draw(st.booleans()):
        other_stride = (stride[0] % 3 + 1, stride[1])  # another row stride
        other_rows = rows
    else:
        other_stride = stride
        other_rows = rows.copy()
        other_rows[0, 1] += 1  # the first row one column over
    other = (shape, other_stride, offset, window, other_rows)
    a, _ = _random_patches(geometry, rng)
    b, _ = _random_patches(other, rng)
    _assert_sum_is_dense_sum(a, b, stays_patches=False)


def test_identity_rows_pick_single_neurons():
    shape = (3, 4, 2)
    index = np.array([0, 5, 23, 14])
    dense = keras.ops.convert_to_numpy(
        Patches.identity(shape, index, "float32").to_dense()
    )
    expected = np.eye(24, dtype=np.float32)[index].reshape(1, 4, *shape)
    np.testing.assert_array_equal(dense, expected)


# ---------------------------------------------------------------------------
# CROWN: patches against dense
# ---------------------------------------------------------------------------


def _assert_same_bounds(model, x, epsilon, input_range=None, norm="linf"):
    kwargs = dict(input_range=input_range, norm=norm)
    pl, pu = vn.compute_bounds(model, x, epsilon, method=CROWN(patches=True), **kwargs)
    dl, du = vn.compute_bounds(model, x, epsilon, method=CROWN(patches=False), **kwargs)
    scale = max(1.0, float(np.abs(dl).max()), float(np.abs(du).max()))
    np.testing.assert_allclose(pl, dl, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(pu, du, rtol=1e-5, atol=1e-5 * scale)
    return (pl, pu), (dl, du)


def _irregular_cnn():
    """Rectangular kernels, unequal strides, asymmetric zero padding, BN,
    a residual block, average pooling and a smooth activation."""
    inp = layers.Input((11, 9, 2))
    h = layers.ZeroPadding2D(((1, 2), (0, 1)))(inp)
    h = layers.Conv2D(4, (3, 5), strides=(2, 1), padding="same")(h)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU()(h)
    h = layers.ResidualBlock(3, kernel_size=3, activation="relu")(h)
    h = layers.Conv2D(5, (2, 3), strides=(1, 2), padding="valid")(h)
    h = layers.LeakyReLU(0.1)(h)
    h = layers.AveragePooling2D(2, strides=1, padding="same")(h)
    h = layers.Conv2D(3, 3, strides=2, padding="same")(h)
    h = layers.Sigmoid()(h)
    h = layers.Flatten()(h)
    return keras.Model(inp, layers.Dense(6)(h))


@pytest.mark.parametrize(
    "norm,input_range", [("linf", (0.0, 1.0)), ("linf", None), ("l2", None)]
)
def test_patches_equal_dense_and_are_sound_on_an_irregular_cnn(norm, input_range):
    rng = np.random.default_rng(3)
    model = randomize_weights(_irregular_cnn(), rng, scale=1.5)
    x = random_inputs((11, 9, 2), 3, rng, input_range)
    epsilon = 0.05 if norm == "linf" else 0.3
    _assert_same_bounds(model, x, epsilon, input_range, norm)
    check_soundness(
        model,
        x,
        epsilon,
        norm,
        input_range,
        methods=(CROWN(), CROWN(patches=False)),
        n_samples=256,
        seed=1,
    )


@given(spec=conv_specs(), seed=st.integers(0, 2**16), ranged=st.booleans())
def test_patches_equal_dense_on_random_cnns(spec, seed, ranged):
    rng = np.random.default_rng(seed)
    model = randomize_weights(build_conv(spec), rng, scale=1.5)
    input_range = (0.0, 1.0) if ranged else None
    x = random_inputs(spec["input"], 2, rng, input_range)
    _assert_same_bounds(model, x, 0.1, input_range)


def test_patches_hold_far_fewer_coefficients_than_dense():
    """Bounding every neuron behind two convolutions: windows, not grids."""
    rng = np.random.default_rng(0)
    model = randomize_weights(_small_cnn(), rng, scale=1.5)
    x = keras.ops.convert_to_tensor(random_inputs((10, 10, 1), 2, rng, (0.0, 1.0)))
    perturbation = vn.bounds.LinfBall(0.05, (0.0, 1.0))
    graph = vn.bounds.BoundGraph(model)
    bounds = methods.interval_pass(graph, x, perturbation)
    second = [
        i for i, n in enumerate(graph.nodes) if isinstance(n.rule, layers.Conv2D)
    ][1]
    low = bounds[second][0]
    index = np.arange(int(np.prod(low.shape[1:])))
    peaks, results = [], []
    for spec in (
        Patches.identity(tuple(low.shape[1:]), index, "float32"),
        methods._unit_rows(graph, second, index, low, patches=False),
    ):
        stats = {}
        results.append(
            methods.backward_pass(
                graph, second, spec, spec, bounds, x, perturbation, stats=stats
            )
        )
        peaks.append(stats["peak"])
    assert isinstance(
        methods._unit_rows(graph, second, index, low, patches=True), Patches
    )
    assert peaks[0] * 4 < peaks[1]
    for side in (0, 1):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(results[0][side]),
            keras.ops.convert_to_numpy(results[1][side]),
            rtol=1e-5,
            atol=1e-5,
        )


# ---------------------------------------------------------------------------
# The memory budget
# ---------------------------------------------------------------------------


def _small_cnn():
    inp = layers.Input((10, 10, 1))
    h = layers.Conv2D(6, 3, strides=1, padding="same")(inp)
    h = layers.ReLU()(h)
    h = layers.Conv2D(6, 3, strides=2, padding="same")(h)
    h = layers.ReLU()(h)
    h = layers.Flatten()(h)
    h = layers.Dense(12)(h)
    h = layers.ReLU()(h)
    return keras.Model(inp, layers.Dense(4)(h))


@pytest.mark.parametrize("patches", [True, False])
def test_a_tight_budget_chunks_rows_and_gives_identical_bounds(patches, monkeypatch):
    rng = np.random.default_rng(1)
    model = randomize_weights(_small_cnn(), rng, scale=2.0)
    x = random_inputs((10, 10, 1), 4, rng, (0.0, 1.0))
    method = CROWN(patches=patches)
    free = vn.compute_bounds(model, x, 0.1, method=method, input_range=(0.0, 1.0))
    calls = []
    original = methods.backward_pass

    def count(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(methods, "backward_pass", count)
    # Room for a handful of rows at a time: far below the dense identity.
    with vn.bounds.memory_limit(0.25):
        tight = vn.compute_bounds(model, x, 0.1, method=method, input_range=(0.0, 1.0))
    # The same sums, grouped differently: equal up to float rounding.
    np.testing.assert_allclose(tight[0], free[0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(tight[1], free[1], rtol=1e-6, atol=1e-5)
    rows = [np.shape(getattr(a, "coeffs", a))[1] for a in calls if a is not None]
    assert len(rows) > 6 and max(rows) < 100


def test_a_budget_below_one_row_raises_a_clear_error():
    rng = np.random.default_rng(2)
    model = randomize_weights(_small_cnn(), rng, scale=2.0)
    x = random_inputs((10, 10, 1), 8, rng, (0.0, 1.0))
    with vn.bounds.memory_limit(1e-4), pytest.raises(vn.MemoryBudgetError) as info:
        vn.compute_bounds(
            model, x, 0.1, method=CROWN(patches=False), input_range=(0, 1)
        )
    message = str(info.value)
    assert "memory_limit" in message and "batch_size" in message and "MiB" in message


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1GB", True])
def test_memory_limit_rejects_bad_values(bad):
    with pytest.raises(vn.InvalidInputError), vn.bounds.memory_limit(bad):
        pass


def test_memory_budget_follows_the_environment_and_the_context(monkeypatch):
    monkeypatch.setenv("VERINET_BOUND_MEMORY_MB", "64")
    assert vn.bounds.memory_budget() == 64 * 2**20
    with vn.bounds.memory_limit(8):
        assert vn.bounds.memory_budget() == 8 * 2**20
        with vn.bounds.memory_limit(2):
            assert vn.bounds.memory_budget() == 2 * 2**20
        assert vn.bounds.memory_budget() == 8 * 2**20
    monkeypatch.setenv("VERINET_BOUND_MEMORY_MB", "lots")
    with pytest.raises(vn.InvalidInputError, match="VERINET_BOUND_MEMORY_MB"):
        vn.bounds.memory_budget()
    monkeypatch.delenv("VERINET_BOUND_MEMORY_MB")
    assert vn.bounds.memory_budget() > 0


@pytest.mark.parametrize("param_shape", [None, (1, 1, 3), (6, 6, 3), (6, 1, 3)])
def test_patches_equal_dense_through_elementwise_affine(param_shape):
    """Per-channel and per-position scales and shifts (what ONNX Mul/Add by
    a constant import as) between convolutions: the patches rows gather the
    parameters at each window and agree with dense rows; both are sound."""
    rng = np.random.default_rng(11)
    affine = layers.ElementwiseAffine(param_shape)
    model = keras.Sequential(
        [
            layers.Input((6, 6, 2)),
            layers.Conv2D(3, 3, padding="same"),
            affine,
            layers.ReLU(),
            layers.Conv2D(4, 3, strides=2, padding="same"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    model = randomize_weights(model, rng)
    shape = affine.scale.shape
    affine.set_weights(
        [
            rng.uniform(-2, 2, shape).astype("float32"),
            rng.normal(0, 1, shape).astype("float32"),
        ]
    )
    x = random_inputs((6, 6, 2), 5, rng, (0.0, 1.0))
    _assert_same_bounds(model, x, 0.05, (0.0, 1.0))
    check_soundness(model, x, 0.05, "linf", (0.0, 1.0), methods=("crown",))
