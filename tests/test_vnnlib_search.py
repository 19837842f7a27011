"""The parts of ``vn.verify``'s search, each against answers derived by hand.

``tests/test_vnnlib.py`` checks whole answers; these tests pin down the
pieces a wrong answer would come from: the tolerance of a bound-based proof,
the row offsets of conjunctions, nudging a counterexample into a strict box,
the verdict over several regions, and the attack.
"""

import verinet as vn  # noqa: I001 - verinet before keras

import importlib
import re
import time

import numpy as np
import onnxruntime as ort
import pytest

from verinet import layers as L
from verinet.bounds.api import resolve_method
from verinet.onnx import export_onnx, from_onnx, load_onnx
from verinet.errors import InvalidInputError
from verinet.vnnlib import verify
from verinet.vnnlib.parser import OutputSpec, Property, Region

search = importlib.import_module("verinet.vnnlib.verify")


def _spec(rows, b, strict=None, outputs=2):
    """``A y <= b`` with ``A`` given as rows (``outputs`` columns)."""
    A = np.asarray(rows, dtype=np.float64).reshape(len(b), outputs)
    b = np.asarray(b, dtype=np.float64)
    strict = np.zeros(len(b), bool) if strict is None else np.asarray(strict, bool)
    return OutputSpec(A, b, strict)


def _region(lower, upper, specs, strict_lower=None, strict_upper=None):
    return Region(
        np.asarray(lower, np.float64),
        np.asarray(upper, np.float64),
        tuple(specs),
        strict_lower=None if strict_lower is None else np.asarray(strict_lower),
        strict_upper=None if strict_upper is None else np.asarray(strict_upper),
    )


def _linear_net(tmp_path, kernel, bias, name):
    """``y = x @ kernel + bias`` exported to ONNX."""
    kernel = np.asarray(kernel, np.float64)
    model = vn.Sequential([L.Input((kernel.shape[0],)), L.Dense(kernel.shape[1])])
    model.layers[0].set_weights([kernel, np.asarray(bias, np.float64)])
    model(np.zeros((1, kernel.shape[0]), "float32"))
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path)
    return path


@pytest.fixture(scope="module")
def identity_path(tmp_path_factory):
    return _linear_net(tmp_path_factory.mktemp("search"), np.eye(2), [0, 0], "id2")


def _problem(path, method="ibp", tolerance=0.0):
    """The ``_Problem`` that ``verify`` builds for the network at ``path``."""
    proto = load_onnx(path)
    session = ort.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    model = search._flat_output(from_onnx(proto))
    return search._Problem(model, session, resolve_method(method), tolerance, "float64")


# ---------------------------------------------------------------------------
# proven: what bounds may call impossible
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "b, tolerance, expected",
    [
        # y0 = x0 >= 1 on the box: "y0 <= b" is impossible iff 1 > b + margin,
        # margin = tolerance * (1 + |b|).
        (0.998, 1e-3, True),  # 0.998 + 0.001998 = 0.999998 < 1
        (0.9985, 1e-3, False),  # 0.9985 + 0.0019985 = 1.0004985 > 1
        (1.0, 0.0, False),  # y0 = 1 at the box's corner: reachable
        (-3.0, 0.1, True),  # -3 + 0.4 = -2.6 < 1
        (0.5, 0.1, True),  # 0.5 + 0.15 < 1
        (0.95, 0.05, False),  # 0.95 + 0.0975 > 1
    ],
)
def test_proof_needs_the_bound_to_clear_the_tolerance(
    identity_path, b, tolerance, expected
):
    problem = _problem(identity_path, tolerance=tolerance)
    region = _region([1, -1], [2, 1], [_spec([[1, 0]], [b])])
    proven = problem.proven(np.array([[1.0, -1.0]]), np.array([[2.0, 1.0]]), region)
    assert proven.tolist() == [[expected]]


def test_tolerance_scales_with_the_magnitude_of_b(identity_path):
    """y1 = x1 in [-2.9, 0]: "y1 <= -3" is impossible by 0.1, but within the
    tolerance 0.1 * (1 + 3) = 0.4 of a right-hand side of magnitude 3."""
    problem = _problem(identity_path, tolerance=0.1)
    region = _region([0, -2.9], [1, 0], [_spec([[0, 1]], [-3.0])])
    assert problem.proven(region.lower[None], region.upper[None], region).tolist() == [
        [False]
    ]
    loose = _problem(identity_path, tolerance=0.01)  # margin 0.04 < 0.1
    assert loose.proven(region.lower[None], region.upper[None], region).tolist() == [
        [True]
    ]


def test_one_impossible_row_refutes_a_conjunction_at_its_own_offset(identity_path):
    """Specs of 2, 1 and 2 rows: each spec reads its own rows of the bound."""
    problem = _problem(identity_path)
    specs = [
        _spec([[1, 0], [0, 1]], [10, 10]),  # both rows reachable: possible
        _spec([[1, 0]], [-5]),  # y0 <= -5: impossible
        _spec([[0, 1], [-1, 0]], [10, -3]),  # y0 >= 3 impossible: refuted
    ]
    region = _region([-1, -1], [1, 1], specs)
    boxes_lo = np.array([[-1.0, -1.0], [-6.0, -1.0]])
    boxes_up = np.array([[1.0, 1.0], [-5.5, 1.0]])
    proven = problem.proven(boxes_lo, boxes_up, region)
    # Box 2 has y0 in [-6, -5.5]: "y0 <= -5" holds on all of it.
    assert proven.tolist() == [[False, True, True], [False, False, True]]


def test_bounds_are_taken_in_float64(identity_path):
    """y0 >= 1 + 1e-12 on the box; float32 rounds that bound to 1 exactly, and
    no float32 input in the box reaches "y0 <= 1"."""
    problem = _problem(identity_path, tolerance=0.0)
    low = np.array([[1.0 + 1e-12, 0.0]])
    region = _region(low[0], [2.0, 1.0], [_spec([[1, 0]], [1.0])])
    assert problem.proven(low, np.array([[2.0, 1.0]]), region).tolist() == [[True]]
    result = verify(identity_path, _property(region), tolerance=0.0, timeout=10)
    assert result == "unsat", result.detail


# ---------------------------------------------------------------------------
# Counterexamples: in the box (strictness included), confirmed by onnxruntime
# ---------------------------------------------------------------------------


def test_inside_clips_then_rounds_to_float32_within_the_box():
    region = _region([0.0, -1.0], [0.1, 1.0], [])
    x = search._inside(np.array([5.0, -3.0]), region)
    assert x.dtype == np.float32
    # float32(0.1) is above 0.1: the largest float32 not above it is taken.
    expected = np.nextafter(np.float32(0.1), np.float32(0))
    assert x[0] == expected and float(x[0]) <= 0.1 and x[1] == -1.0
    assert region.contains(x)
    inside = search._inside(np.array([0.05, 0.25]), region)
    np.testing.assert_array_equal(inside, np.float32([0.05, 0.25]))


def test_inside_moves_off_strict_bounds_by_one_float32_step():
    region = _region(
        [0.0, 0.0],
        [1.0, 1.0],
        [],
        strict_lower=[True, False],
        strict_upper=[False, True],
    )
    x = search._inside(np.array([0.0, 1.0]), region)
    assert x[0] == np.nextafter(np.float32(0), np.float32(1))
    assert x[1] == np.nextafter(np.float32(1), np.float32(0))
    assert region.contains(x)


def test_inside_is_none_for_an_empty_open_box():
    region = _region([0.5], [0.5], [], strict_lower=[True], strict_upper=[False])
    assert search._inside(np.array([0.5]), region) is None


def test_confirm_checks_onnxruntime_against_every_spec(identity_path):
    problem = _problem(identity_path)
    specs = [_spec([[1, 0]], [-0.5]), _spec([[0, -1]], [-0.5])]  # y0<=-.5 | y1>=.5
    region = _region([-1, -1], [1, 1], specs)
    assert problem.confirm(np.array([0.0, 0.0]), region) is None
    x, y = problem.confirm(np.array([0.0, 0.75]), region)  # second spec only
    np.testing.assert_array_equal(x, np.float32([0.0, 0.75]))
    np.testing.assert_array_equal(y, [0.0, 0.75])
    assert problem.confirm(np.array([-0.75, 0.0]), region) is not None
    # A point outside the box is brought into it first: (-3, 0) -> (-1, 0).
    x, _ = problem.confirm(np.array([-3.0, 0.0]), region)
    np.testing.assert_array_equal(x, np.float32([-1.0, 0.0]))


def test_violation_scores_are_the_worst_row(identity_path):
    y = np.array([[1.0, 2.0], [0.0, -1.0]])
    specs = [_spec([[1, 0], [0, 1]], [0.5, 3.0]), _spec([[1, 1]], [0.0]), _spec([], [])]
    scores = search._violation(y, specs)
    # point 1: max(1 - .5, 2 - 3) = .5, 3 - 0; point 2: max(-.5, -4), -1 - 0
    np.testing.assert_array_equal(scores[:, :2], [[0.5, 3.0], [-0.5, -1.0]])
    assert np.all(scores[:, 2] == -np.inf)


def test_try_points_returns_a_violating_point_and_skips_the_others(identity_path):
    problem = _problem(identity_path)
    region = _region([-1, -1], [1, 1], [_spec([[-1, 0]], [-0.5])])  # y0 >= 0.5
    points = np.array([[0.0, 0.0], [0.25, 0.0], [0.75, 0.5], [0.9, 0.1]])
    x, y = problem.try_points(points, region)
    assert x[0] >= 0.5 and y[0] >= 0.5
    assert problem.try_points(points[:2], region) is None


def test_try_points_takes_a_point_exactly_on_a_non_strict_bound(identity_path):
    """ "y0 <= 0.5" holds at y0 = 0.5 (score exactly 0)."""
    problem = _problem(identity_path)
    region = _region([0.5, 0], [1, 1], [_spec([[1, 0]], [0.5])])
    x, y = problem.try_points(np.array([[0.75, 0.5], [0.5, 0.5]]), region)
    assert x[0] == 0.5 and y[0] == 0.5


def test_pgd_walks_into_a_corner_sampling_misses(tmp_path):
    """y = sum(x) on [0, 1]^20: "y >= 19.5" holds on a 1e-22 share of the box
    (the centre and random starts sum to about 10)."""
    path = _linear_net(tmp_path, np.ones((20, 1)), [0.0], "sum20")
    problem = _problem(path)
    region = _region([0] * 20, [1] * 20, [_spec([[-1]], [-19.5], outputs=1)])
    x, y = problem.pgd(region, list(region.specs))
    assert np.all((x >= 0) & (x <= 1)) and x.sum() >= 19.5 and y[0] >= 19.5
    assert problem.pgd(region, list(region.specs), deadline=0.0) is None


def test_pgd_starts_from_the_centre(identity_path):
    """ "0.49 <= y0 <= 0.51" on [0, 1]^2 (y = x): one step of PGD jumps to the
    box's faces, so only the centre start can meet it."""
    problem = _problem(identity_path)
    region = _region([0, 0], [1, 1], [_spec([[1, 0], [-1, 0]], [0.51, -0.49])])
    x, _ = problem.pgd(region, list(region.specs), steps=1)
    np.testing.assert_array_equal(x, np.float32([0.5, 0.5]))


def test_pgd_pads_conjunctions_of_different_lengths(tmp_path):
    """y = x on [0, 1]^2. The 1-row spec "y0 >= 0.97" holds near x0 = 1; the
    2-row spec "y0 <= 0 and y0 >= 1" never holds and pulls its starts to
    x0 = 0.5. The 1-row spec's padded row must not count."""
    path = _linear_net(tmp_path, np.eye(2), [0, 0], "id2b")
    problem = _problem(path)
    specs = [_spec([[-1, 0]], [-0.97]), _spec([[1, 0], [-1, 0]], [0.0, -1.0])]
    region = _region([0, 0], [1, 1], specs)
    A, b, mask = search._padded(specs)
    assert A.shape == (2, 2, 2) and mask.tolist() == [[True, False], [True, True]]
    np.testing.assert_array_equal(b, [[-0.97, 0.0], [0.0, -1.0]])
    x, _ = problem.pgd(region, specs)
    assert x[0] >= 0.97


# ---------------------------------------------------------------------------
# The search and the verdict over regions
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero_path(tmp_path_factory):
    """``y0 = relu(x0 + x1) - relu(x0 + x1) = 0``, which bounds on a wide box
    cannot see (the two relus relax independently)."""
    model = vn.Sequential([L.Input((2,)), L.Dense(2), L.ReLU(), L.Dense(1)])
    model.layers[0].set_weights([np.array([[1.0, 1.0], [1.0, 1.0]]), np.zeros(2)])
    model.layers[2].set_weights([np.array([[1.0], [-1.0]]), np.zeros(1)])
    model(np.zeros((1, 2), "float32"))
    path = tmp_path_factory.mktemp("search") / "zero.onnx"
    export_onnx(model, path)
    return path


def _solve(problem, region, attack=None, batch=8, timeout=30.0):
    deadline = time.perf_counter() + timeout
    rng = np.random.default_rng(0)
    return search._solve_region(problem, region, attack, deadline, batch, rng)


def test_splitting_proves_what_the_whole_box_cannot(zero_path):
    problem = _problem(zero_path)
    region = _region([-1, -1], [1, 1], [_spec([[-1]], [-0.5], outputs=1)])  # y0 >= 0.5
    whole = problem.proven(region.lower[None], region.upper[None], region)
    assert whole.tolist() == [[False]]
    assert _solve(problem, region) == ("unsat", None)


def test_too_many_open_boxes_gives_unknown(zero_path, monkeypatch):
    problem = _problem(zero_path)
    region = _region([-1, -1], [1, 1], [_spec([[-1]], [-0.5], outputs=1)])
    monkeypatch.setattr(search, "MAX_OPEN_BOXES", 3)
    assert _solve(problem, region, batch=1) == ("unknown", None)


def test_a_point_bounds_cannot_settle_is_unknown_not_unsat(identity_path):
    """The box is the single point x = (1, 0), y0 = 1; "y0 <= 1 - 1e-7" is
    false there, but within the tolerance, so bounds cannot refute it and
    the point cannot be split."""
    problem = _problem(identity_path, tolerance=1e-5)
    calls = []
    proven = problem.proven
    problem.proven = lambda *args: calls.append(1) or proven(*args)
    region = _region([1, 0], [1, 0], [_spec([[1, 0]], [1 - 1e-7])])
    assert _solve(problem, region) == ("unknown", None)
    assert len(calls) == 1  # a point is given up on, never "split"


def test_an_empty_conjunction_is_sat_at_the_centre(identity_path):
    problem = _problem(identity_path)
    region = _region([0, 2], [1, 4], [_spec([[1, 0]], [-9.0]), _spec([], [])])
    status, (x, y) = _solve(problem, region)
    assert status == "sat"
    np.testing.assert_array_equal(x, np.float32([0.5, 3.0]))
    np.testing.assert_array_equal(y, [0.5, 3.0])


def test_an_empty_conjunction_on_an_empty_box_is_not_sat(identity_path):
    """No input lies in 0.5 < x0 <= 0.5: nothing can be confirmed."""
    problem = _problem(identity_path)
    region = _region([0.5, 0], [0.5, 1], [_spec([], [])], strict_lower=[True, False])
    assert _solve(problem, region) == ("unknown", None)


def test_a_proven_chunk_does_not_end_the_search(identity_path):
    """y = x on [-1, 1]^2, "y0 >= 0.999 and y1 >= 0.999" (a corner sampling
    misses). With one sub-box per bound batch, the first split's left half
    (y0 <= 0) is proven alone; the right half still holds the corner."""
    problem = _problem(identity_path)
    region = _region([-1, -1], [1, 1], [_spec([[-1, 0], [0, -1]], [-0.999, -0.999])])
    status, found = _solve(problem, region, batch=1)
    assert status == "sat", status
    assert np.all(found[0] >= 0.999)


def test_no_attack_means_no_pgd(zero_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("PGD ran with attack=None")

    monkeypatch.setattr(search._Problem, "pgd", fail)
    region = _region([-1, -1], [1, 1], [_spec([[-1]], [-0.5], outputs=1)])
    prop = _property(region, n_out=1)
    assert verify(zero_path, prop, attack=None, method="ibp", timeout=20) == "unsat"
    with pytest.raises(AssertionError, match="PGD ran"):
        verify(zero_path, prop, method="ibp", timeout=20)


def _property(*regions, n_in=2, n_out=2):
    return Property(n_in, n_out, tuple(regions))


def test_an_unsettled_region_keeps_the_answer_unknown(identity_path):
    """Region 1 cannot be settled (as above), region 2 is proven: the
    property is not proven."""
    unsettled = _region([1, 0], [1, 0], [_spec([[1, 0]], [1 - 1e-7])])
    proven = _region([-1, -1], [1, 1], [_spec([[1, 0]], [-2.0])])
    assert verify(identity_path, _property(proven), timeout=20) == "unsat"
    for order in ((unsettled, proven), (proven, unsettled)):
        result = verify(identity_path, _property(*order), timeout=20)
        assert result == "unknown" and result.counterexample is None


def test_a_violated_later_region_gives_sat(identity_path):
    proven = _region([-1, -1], [1, 1], [_spec([[1, 0]], [-2.0])])
    broken = _region([2, 2], [3, 3], [_spec([[-1, 0]], [-2.5])])  # y0 >= 2.5
    result = verify(identity_path, _property(proven, broken), timeout=20)
    assert result == "sat"
    assert 2.5 <= result.counterexample[0] <= 3 and result.output[0] >= 2.5


def test_results_carry_their_evidence(identity_path):
    """Timing and detail of each answer; ``batch_size=1`` and an in-memory
    ``onnx.ModelProto`` are accepted."""
    proven = _region([-1, -1], [1, 1], [_spec([[1, 0]], [-2.0])])
    broken = _region([2, 2], [3, 3], [_spec([[-1, 0]], [-2.5])])
    unsettled = _region([1, 0], [1, 0], [_spec([[1, 0]], [1 - 1e-7])])
    proto = load_onnx(identity_path)
    for prop, status, detail in [
        (_property(proven), "unsat", "proven by bounds"),
        (_property(proven, broken), "sat", "counterexample found"),
        (_property(unsettled), "unknown", "not settled"),
    ]:
        for network in (identity_path, proto):
            start = time.perf_counter()
            result = verify(network, prop, batch_size=1, timeout=20)
            wall = time.perf_counter() - start
            assert (result, result.detail) == (status, detail)
            assert 0 < result.seconds <= wall


def test_multidimensional_outputs_are_flattened_row_major(tmp_path):
    """A network whose output is (2, 2): Y_j index it flattened, row-major."""
    model = vn.Sequential([L.Input((4,)), L.Dense(4), L.Reshape((2, 2))])
    model.layers[0].set_weights([np.eye(4), np.zeros(4)])
    model(np.zeros((1, 4), "float32"))
    path = tmp_path / "square.onnx"
    export_onnx(model, path)
    # Y_2 = x2 in [0, 1] and Y_1 = x1 in [5, 6]: "Y_2 >= Y_1" is impossible,
    # "Y_2 >= 0.9" is not.
    box = ([0, 5, 0, 0], [1, 6, 1, 1])
    refuted = _region(*box, [_spec([[0, 1, -1, 0]], [0.0], outputs=4)])
    assert verify(path, _property(refuted, n_in=4, n_out=4)) == "unsat"
    broken = _region(*box, [_spec([[0, 0, -1, 0]], [-0.9], outputs=4)])
    result = verify(path, _property(broken, n_in=4, n_out=4), timeout=20)
    assert result == "sat" and result.counterexample[2] >= 0.9


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"tolerance": -1e-3}, "tolerance"),
        ({"tolerance": float("nan")}, "tolerance"),
        ({"attack": "fgsm"}, "attack"),
    ],
)
def test_bad_arguments_are_refused(identity_path, kwargs, message):
    prop = _property(_region([0, 0], [1, 1], [_spec([[1, 0]], [-1.0])]))
    with pytest.raises(InvalidInputError, match=message):
        verify(identity_path, prop, **kwargs)


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def test_vnncomp_lists_the_counterexample_and_outputs_exactly():
    x = np.float32([0.1, -2.5])
    y = np.array([0.30000001192092896, 7.0])
    text = search.VerificationResult("sat", x, y).vnncomp()
    assert text.startswith("sat\n(") and text.endswith(")\n")
    pairs = re.findall(r"\((X|Y)_(\d+) ([^)]+)\)", text)
    assert [(v, int(i)) for v, i, _ in pairs] == [
        ("X", 0),
        ("X", 1),
        ("Y", 0),
        ("Y", 1),
    ]
    values = [float(v) for _, _, v in pairs]
    assert values == [float(x[0]), -2.5, 0.30000001192092896, 7.0]  # no rounding
    one = search.VerificationResult("sat", np.float32([0.5]), np.array([7.0]))
    assert one.vnncomp() == "sat\n((X_0 0.5)\n (Y_0 7.0))\n"
    assert search.VerificationResult("unsat").vnncomp() == "unsat\n"
    assert search.VerificationResult("unknown").vnncomp() == "unknown\n"
    with pytest.raises(ValueError, match="status"):
        search.VerificationResult("proven")


def test_verbose_reports_on_stderr_only(identity_path, capsys):
    regions = (
        _region([-1, -1], [1, 1], [_spec([[1, 0]], [-2.0])]),
        _region([2, 2], [3, 3], [_spec([[-1, 0]], [-2.5])]),
    )
    result = verify(identity_path, _property(*regions), verbose=1, timeout=20)
    assert result == "sat"
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert all(line.startswith("verinet verify [") for line in lines)
    assert f"] {identity_path}: 2 inputs, 2 outputs; 2 input region(s)" in lines[0]
    elapsed = [float(re.match(r"verinet verify \[ *([0-9.]+)s\]", x)[1]) for x in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] < 60
    assert any("region 1/2: unsat" in line for line in lines)
    assert "region 2/2: sat" in lines[-1]
    verify(identity_path, _property(regions[0]), timeout=20)  # verbose=0
    assert capsys.readouterr() == ("", "")


def test_stage_lines_are_rate_limited(capsys):
    progress = search._Progress(1, 3, start=0.0, interval=3600.0)
    progress.region = 1
    progress.stage("first")
    progress.stage("second")  # within the interval: dropped
    progress.say("verdict")  # always shown
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("region 2/3: first") and lines[1].endswith("verdict")
    quiet = search._Progress(0, 1, start=0.0)
    quiet.say("nothing")
    assert capsys.readouterr().err == ""
