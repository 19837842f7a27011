"""VNN-LIB: parsing hand-written properties and deciding them with vn.verify."""

import verinet as vn  # noqa: I001 - verinet before keras

import importlib
import os
import time

import keras
import numpy as np
import onnxruntime as ort
import pytest
import torch

from verinet import layers as L
from verinet import vnnlib
from verinet.onnx import export_onnx
from verinet.errors import VnnlibError
from verinet.vnnlib import verify

# The module (the package's ``verify`` attribute is the function).
verify_module = importlib.import_module("verinet.vnnlib.verify")


def _declare(n_in, n_out):
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    return "\n".join(lines) + "\n"


def _box(lows, highs):
    return "".join(
        f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n"
        for i, (lo, hi) in enumerate(zip(lows, highs, strict=True))
    )


def _write(tmp_path, text, name="prop.vnnlib"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


def test_reads_box_and_single_output_constraint(tmp_path):
    text = (
        "; a robustness property\n"
        + _declare(3, 2)
        + "(assert (<= X_0 0.5))\n(assert (>= X_0 -0.5))\n"
        + "(assert (>= 0.25 X_1))  ; reversed operands\n(assert (<= 1e-1 X_1))\n"
        + "(assert (and (>= X_2 -1) (<= X_2 1.5)))\n"
        + "(assert (>= Y_1 Y_0))\n"
    )
    prop = vnnlib.read(_write(tmp_path, text))
    assert (prop.num_inputs, prop.num_outputs) == (3, 2)
    assert len(prop.regions) == 1
    region = prop.regions[0]
    np.testing.assert_array_equal(region.lower, [-0.5, 0.1, -1.0])
    np.testing.assert_array_equal(region.upper, [0.5, 0.25, 1.5])
    (spec,) = region.specs
    # Y_1 >= Y_0  <=>  Y_0 - Y_1 <= 0
    np.testing.assert_array_equal(spec.A, [[1.0, -1.0]])
    np.testing.assert_array_equal(spec.b, [0.0])
    assert spec.violated_by([1.0, 2.0]) and not spec.violated_by([2.0, 1.0])


def test_reads_vnncomp_disjunction_of_conjunctions(tmp_path):
    text = (
        _declare(2, 4)
        + _box([0, 0], [1, 1])
        + """(assert (or
            (and (>= Y_0 Y_1) (>= Y_0 Y_2))
            (and (<= (+ Y_3 (* 2 Y_1) (- Y_2)) 3.5))
            (and (> Y_2 0.25))
        ))"""
    )
    (region,) = vnnlib.read(_write(tmp_path, text)).regions
    first, second, third = region.specs
    np.testing.assert_array_equal(first.A, [[-1, 1, 0, 0], [-1, 0, 1, 0]])
    np.testing.assert_array_equal(first.b, [0, 0])
    np.testing.assert_array_equal(second.A, [[0, 2, -1, 1]])
    np.testing.assert_array_equal(second.b, [3.5])
    np.testing.assert_array_equal(third.A, [[0, 0, -1, 0]])
    np.testing.assert_array_equal(third.b, [-0.25])
    assert third.strict.tolist() == [True]
    assert third.violated_by([0, 0, 0.3, 0]) and not third.violated_by([0, 0, 0.25, 0])


def test_conjunction_of_disjunctions_expands(tmp_path):
    text = (
        _declare(1, 3)
        + _box([0], [1])
        + "(assert (or (<= Y_0 0) (<= Y_1 0)))\n(assert (or (<= Y_2 0) (>= Y_2 5)))\n"
    )
    (region,) = vnnlib.read(_write(tmp_path, text)).regions
    assert len(region.specs) == 4
    assert all(spec.A.shape == (2, 3) for spec in region.specs)


def test_input_constraints_inside_disjunction_give_regions(tmp_path):
    text = _declare(1, 1) + (
        "(assert (or (and (>= X_0 0) (<= X_0 1) (<= Y_0 0))\n"
        "            (and (>= X_0 2) (<= X_0 3) (>= Y_0 1))\n"
        "            (and (>= X_0 5) (<= X_0 4) (>= Y_0 1))))\n"  # empty box
    )
    prop = vnnlib.read(_write(tmp_path, text))
    assert len(prop.regions) == 2
    assert [r.lower.tolist() for r in prop.regions] == [[0.0], [2.0]]
    np.testing.assert_array_equal(prop.input_upper, [3.0])


@pytest.mark.parametrize(
    "body, message",
    [
        ("(assert (<= X_0 1))\n(assert (<= Y_0 Y_1))", "no finite lower"),
        (_box([0, 0], [1, 1]) + "(assert (<= (* Y_0 Y_1) 1))", "Nonlinear"),
        (_box([0, 0], [1, 1]) + "(assert (<= X_0 Y_1))", "mixes"),
        (_box([0, 0], [1, 1]) + "(assert (<= (+ X_0 X_1) 1))", "one variable"),
        (_box([0, 0], [1, 1]) + "(assert (<= Y_7 1))", "Unknown variable"),
        (_box([0, 0], [1, 1]) + "(assert (<= Y_0 1)", "Unbalanced"),
        (_box([0, 0], [1, 1]) + "(assert (exists Y_0 1))", "Unsupported"),
        (_box([0, 0], [1, 1]) + "(minimize Y_0)", "Unsupported command"),
    ],
)
def test_malformed_properties_raise(tmp_path, body, message):
    with pytest.raises(VnnlibError, match=message):
        vnnlib.read(_write(tmp_path, _declare(2, 2) + body))


def test_missing_file_raises(tmp_path):
    with pytest.raises(VnnlibError, match="Cannot read"):
        vnnlib.read(tmp_path / "nope.vnnlib")


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------


def _export(model, path):
    model(np.zeros((1, *model.inputs[0].shape[1:]), dtype="float32"))
    export_onnx(model, path)
    return path


@pytest.fixture(scope="module")
def shifted_relu_net(tmp_path_factory):
    """``y0 = relu(x0) + 1``, ``y1 = relu(x1)``: answers known by construction."""
    model = vn.Sequential([L.Input((2,)), L.Dense(2), L.ReLU(), L.Dense(2)])
    model.layers[0].set_weights([np.eye(2), np.zeros(2)])
    model.layers[2].set_weights([np.eye(2), np.array([1.0, 0.0])])
    return _export(model, tmp_path_factory.mktemp("vnn") / "shifted.onnx")


def _onnx_outputs(path, x):
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x, np.float32)})[0]


@pytest.mark.parametrize("method", ["crown", "ibp"])
def test_property_true_by_design_is_unsat(shifted_relu_net, tmp_path, method):
    # On x in [-1, 0.5]^2: y0 >= 1 > 0.5 >= y1, so "Y_0 <= Y_1" never holds.
    text = _declare(2, 2) + _box([-1, -1], [0.5, 0.5]) + "(assert (<= Y_0 Y_1))"
    result = verify(shifted_relu_net, _write(tmp_path, text), method=method)
    assert result == "unsat" and result.counterexample is None


def test_property_broken_by_known_input_is_sat(shifted_relu_net, tmp_path):
    # x = (0, 2) gives y = (1, 2): "Y_0 <= Y_1" holds there.
    text = (
        _declare(2, 2)
        + _box([-1, 0], [1, 3])
        + "(assert (or (and (>= Y_0 5)) (and (<= Y_0 Y_1))))"
    )
    path = _write(tmp_path, text)
    result = verify(shifted_relu_net, path, timeout=20)
    assert result == "sat"
    x = result.counterexample
    assert x.shape == (2,) and x.dtype == np.float32
    assert np.all(x >= [-1, 0]) and np.all(x <= [1, 3])
    y = _onnx_outputs(shifted_relu_net, x[None])[0]
    assert y[0] <= y[1]
    np.testing.assert_allclose(result.output, y)
    assert result.vnncomp().startswith("sat\n((X_0 ")


def test_timeout_gives_unknown_not_unsat(shifted_relu_net, tmp_path):
    text = _declare(2, 2) + _box([-1, -1], [0.5, 0.5]) + "(assert (<= Y_0 Y_1))"
    result = verify(shifted_relu_net, _write(tmp_path, text), timeout=0)
    assert result == "unknown"


def test_sizes_must_match_the_network(shifted_relu_net, tmp_path):
    text = _declare(3, 2) + _box([0, 0, 0], [1, 1, 1]) + "(assert (<= Y_0 Y_1))"
    with pytest.raises(VnnlibError, match="3 inputs"):
        verify(shifted_relu_net, _write(tmp_path, text))


def test_attack_finds_a_needle(tmp_path):
    """Violation only where x0 > 0.995 in [-1, 1]^10: sampling rarely hits it."""
    model = vn.Sequential([L.Input((10,)), L.Dense(1)])
    kernel = np.zeros((10, 1))
    kernel[0, 0] = 1.0
    model.layers[0].set_weights([kernel, np.zeros(1)])
    path = _export(model, tmp_path / "needle.onnx")
    text = _declare(10, 1) + _box([-1] * 10, [1] * 10) + "(assert (>= Y_0 0.995))"
    result = verify(path, _write(tmp_path, text), timeout=20)
    assert result == "sat" and result.counterexample[0] >= 0.995
    text = _declare(10, 1) + _box([-1] * 10, [1] * 10) + "(assert (>= Y_0 1.01))"
    assert verify(path, _write(tmp_path, text)) == "unsat"


def _random_net(seed):
    keras.utils.set_random_seed(seed)
    return vn.Sequential(
        [L.Input((3,)), L.Dense(12), L.ReLU(), L.Dense(12), L.ReLU(), L.Dense(2)]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_unsat_when_a_sampled_input_breaks_the_property(tmp_path, seed):
    """Thresholds around the sampled maximum of y0 - y1: every answer must
    agree with dense sampling, and every sat must be a real counterexample."""
    model = _random_net(seed)
    path = _export(model, tmp_path / "net.onnx")
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, (20000, 3)).astype("float32")
    ys = _onnx_outputs(path, xs)
    gap = ys[:, 0] - ys[:, 1]
    top = float(gap.max())
    answers = {}
    for offset in (-0.2, -0.01, 0.3):
        c = top + offset
        text = (
            _declare(3, 2) + _box([-1] * 3, [1] * 3) + f"(assert (>= (- Y_0 Y_1) {c}))"
        )
        result = verify(path, _write(tmp_path, text), timeout=15)
        answers[offset] = str(result)
        if offset < 0:  # sampling found a violation: unsat would be a bug
            assert result != "unsat"
        if result == "sat":
            x = result.counterexample
            assert np.all(np.abs(x) <= 1)
            y = _onnx_outputs(path, x[None])[0]
            assert y[0] - y[1] >= c
    assert answers[-0.2] == "sat"
    assert answers[0.3] == "unsat"  # 3 inputs: input splitting settles it


def test_nchw_network_counterexample_in_onnx_layout(tmp_path):
    """A torch CNN (NCHW): X_i index the flattened (C, H, W) input."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 4, 2),
    ).eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(
        net, torch.zeros(1, 2, 4, 4), os.fspath(path), dynamo=False, input_names=["x"]
    )
    x0 = np.random.default_rng(0).uniform(size=(2, 4, 4)).astype("float32")
    y0 = _onnx_outputs(path, x0[None])[0]
    big, small = (0, 1) if y0[0] >= y0[1] else (1, 0)
    lows, highs = np.clip(x0 - 0.01, 0, 1).ravel(), np.clip(x0 + 0.01, 0, 1).ravel()
    text = _declare(32, 2) + _box(lows, highs) + f"(assert (>= Y_{big} Y_{small}))"
    result = verify(path, _write(tmp_path, text), timeout=20)
    assert result == "sat"
    assert result.counterexample.shape == (2, 4, 4)
    y = _onnx_outputs(path, result.counterexample[None])[0]
    assert y[big] >= y[small]


def test_strict_input_bounds_are_respected_by_counterexamples(tmp_path):
    """y = x on (0, 1): "Y_0 >= 1" is reachable only on the excluded boundary."""
    model = vn.Sequential([L.Input((1,)), L.Dense(1)])
    model.layers[0].set_weights([np.ones((1, 1)), np.zeros(1)])
    path = _export(model, tmp_path / "identity.onnx")
    closed = _declare(1, 1) + "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
    result = verify(path, _write(tmp_path, closed + "(assert (>= Y_0 1))"))
    assert result == "sat" and result.counterexample[0] == 1.0
    opened = _declare(1, 1) + "(assert (> X_0 0))\n(assert (< X_0 1))\n"
    (region,) = vnnlib.read(_write(tmp_path, opened)).regions
    assert region.upper_is_strict.tolist() == [True]
    assert not region.contains([1.0]) and region.contains([0.5])
    result = verify(path, _write(tmp_path, opened + "(assert (>= Y_0 1))"), timeout=2)
    assert result == "unknown"  # never "sat" at x = 1, and not provable either


# ---------------------------------------------------------------------------
# Disjunctions: every branch must be refuted before "unsat"
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_net(tmp_path_factory):
    """``y = x`` on two inputs: every branch's answer is known by hand."""
    model = vn.Sequential([L.Input((2,)), L.Dense(2)])
    model.layers[0].set_weights([np.eye(2), np.zeros(2)])
    return _export(model, tmp_path_factory.mktemp("vnn") / "identity2.onnx")


# On x in [-1, 1]^2 (so y = x in [-1, 1]^2) the first two branches are
# impossible and bounds refute them on the whole box; the third holds exactly
# on the corner [0.999, 1]^2, a 2.5e-7 share of the box that the 33 sampled
# points never hit. One refuted branch must not settle the disjunction.
_CORNER_OR = (
    _declare(2, 2)
    + _box([-1, -1], [1, 1])
    + """(assert (or
        (and (>= Y_1 2))
        (and (<= Y_0 -2))
        (and (>= Y_0 0.999) (>= Y_1 0.999))
    ))"""
)


@pytest.mark.parametrize("attack", ["pgd", None])
def test_one_refuted_branch_does_not_prove_a_disjunction(
    identity_net, tmp_path, attack
):
    result = verify(
        identity_net, _write(tmp_path, _CORNER_OR), attack=attack, timeout=30
    )
    assert result != "unsat", "a satisfiable disjunction was declared proven"
    # PGD walks into the corner; without it input splitting narrows the box
    # onto the corner until a sub-box centre lies inside it.
    assert result == "sat", result.detail
    x = result.counterexample
    assert np.all(x >= 0.999) and np.all(x <= 1.0)
    y = _onnx_outputs(identity_net, x[None])[0]
    assert y[0] >= 0.999 and y[1] >= 0.999


def test_disjunction_is_unsat_when_every_branch_is_refuted(identity_net, tmp_path):
    text = (
        _declare(2, 2)
        + _box([-1, -1], [1, 1])
        + """(assert (or
            (and (>= Y_1 2))
            (and (<= Y_0 -2))
            (and (>= Y_0 1.01) (>= Y_1 0.5))
            (and (>= (+ Y_0 Y_1) 2.1))
        ))"""
    )
    result = verify(identity_net, _write(tmp_path, text), timeout=30)
    assert result == "unsat" and result.counterexample is None


class _SlowModel:
    """The model, taking ``seconds`` longer for every forward pass: a stand-in
    for a large network without loading the shared CPUs."""

    def __init__(self, model, seconds):
        self.model, self.seconds = model, seconds

    def __call__(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self.model(*args, **kwargs)


def test_every_stage_respects_the_timeout(tmp_path, monkeypatch):
    # y0 = relu(x0) - relu(x0) = 0 everywhere, so "Y_0 >= 0.5" never holds,
    # but bounds on the whole box cannot prove it (the two relus relax
    # independently): verify attacks with PGD, whose 51 steps take 5 s here,
    # then splits. Before the fix PGD ran all its steps: the answer came
    # after about 5.6 s despite timeout=1.
    model = vn.Sequential([L.Input((2,)), L.Dense(2), L.ReLU(), L.Dense(1)])
    model.layers[0].set_weights([np.array([[1.0, 1.0], [0.0, 0.0]]), np.zeros(2)])
    model.layers[2].set_weights([np.array([[1.0], [-1.0]]), np.zeros(1)])
    path = _export(model, tmp_path / "zero.onnx")
    text = _declare(2, 1) + _box([-1, -1], [1, 1]) + "(assert (>= Y_0 0.5))"
    init = verify_module._Problem.__init__

    def slow_init(self, model, *args, **kwargs):
        init(self, model, *args, **kwargs)
        self.model = _SlowModel(self.model, 0.1)

    monkeypatch.setattr(verify_module._Problem, "__init__", slow_init)
    start = time.perf_counter()
    result = verify(path, _write(tmp_path, text), method="ibp", timeout=1)
    seconds = time.perf_counter() - start
    assert result == "unknown"
    assert seconds < 1 + 2, seconds
    assert result.seconds <= seconds
