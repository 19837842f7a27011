"""VNN-LIB robustness properties (writer), instances.csv runs and the CLI on them."""

import verinet as vn  # noqa: I001 - verinet before keras

import csv
import importlib

import numpy as np
import onnxruntime as ort
import pytest

from verinet import layers as L
from verinet import vnnlib
from verinet.cli import main
from verinet.errors import InvalidInputError
from verinet.onnx import export_onnx

# The module (the package's ``verify`` attribute is the function).
verify_module = importlib.import_module("verinet.vnnlib.verify")

# The hand-built network: x has shape (2, 2) (flattened row-major: X_0 = x[0, 0],
# X_1 = x[0, 1], X_2 = x[1, 0], X_3 = x[1, 1]) and
#     y0 = 1,  y1 = 1.5 * x[0, 0],  y2 = 1.5 * x[0, 1],
# so label 0 stays on top exactly while x[0, 0] < 2/3 and x[0, 1] < 2/3.
# Values that float32 holds exactly: where epsilon is 0 the box is one point,
# and a counterexample (a float32 input, as onnxruntime runs it) must be it.
X = np.array([[0.5, 0.25], [0.125, 0.875]])
RANGE = (0.0, 1.0)
#: name -> (epsilon, expected answer, a flat input the counterexample may be).
CASES = {
    # x[0, 0] <= 0.6 and x[0, 1] <= 0.35: y1 <= 0.9, y2 <= 0.525 < 1.
    "holds": (0.1, "unsat"),
    # x[0, 0] reaches 0.8: y1 = 1.2 > 1.
    "flips": (0.3, "sat"),
    # A radius per feature: only x[0, 1] moves far enough (up to 0.75).
    "per_feature": (np.array([[0.1, 0.5], [0.0, 0.0]]), "sat"),
}


def _network():
    model = vn.Sequential([L.Input((2, 2)), L.Flatten(), L.Dense(3)])
    kernel = np.zeros((4, 3))
    kernel[0, 1] = kernel[1, 2] = 1.5
    model.layers[1].set_weights([kernel, np.array([1.0, 0.0, 0.0])])
    return model


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A VNN-COMP-style benchmark folder: onnx/, vnnlib/, instances.csv."""
    root = tmp_path_factory.mktemp("bench")
    (root / "onnx").mkdir()
    (root / "vnnlib").mkdir()
    export_onnx(_network(), root / "onnx" / "net.onnx")
    for name, (eps, _) in CASES.items():
        text = vnnlib.robustness_property(X, 0, eps, 3, input_range=RANGE)
        (root / "vnnlib" / f"{name}.vnnlib").write_text(text)
    # A blank line (skipped) between the instances; line numbers count it.
    (root / "instances.csv").write_text(
        "onnx/net.onnx,vnnlib/holds.vnnlib,30\n"
        "\n"
        "onnx/net.onnx, vnnlib/flips.vnnlib ,30\n"
        "onnx/net.onnx,vnnlib/per_feature.vnnlib,30.5\n"
    )
    return root


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------


def test_written_property_parses_back_to_the_exact_box_and_specs():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3))  # full-precision float64 values
    x[0, 0], x[1, 2] = 0.01, 0.995  # clipped below and above
    eps = np.array([0.03, 0.1 / 3, 0.2])  # per feature, broadcast over rows
    prop = vnnlib.parse(vnnlib.robustness_property(x, 1, eps, 3, input_range=(0, 1)))
    assert (prop.num_inputs, prop.num_outputs) == (6, 3)
    (region,) = prop.regions
    lower = np.maximum(x - eps, 0.0).ravel()
    upper = np.minimum(x + eps, 1.0).ravel()
    np.testing.assert_array_equal(region.lower, lower)  # exact, bit for bit
    np.testing.assert_array_equal(region.upper, upper)
    assert region.lower[0] == 0.0 and region.upper[5] == 1.0
    assert not region.lower_is_strict.any() and not region.upper_is_strict.any()
    # "Some other class scores at least the label": Y_j - Y_1 >= 0, j in {0, 2}.
    assert len(region.specs) == 2
    for spec, j in zip(region.specs, (0, 2), strict=True):
        expected = np.zeros((1, 3))
        expected[0, 1], expected[0, j] = 1.0, -1.0  # Y_1 - Y_j <= 0
        np.testing.assert_array_equal(spec.A, expected)
        np.testing.assert_array_equal(spec.b, [0.0])
        assert spec.strict.tolist() == [False]
        assert spec.violated_by(np.eye(3)[j]) and not spec.violated_by(np.eye(3)[1])


def test_written_property_reads_from_a_file_and_without_a_range(tmp_path):
    x = np.array([0.1, -2.5, 1e-7], dtype=np.float32)
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib.robustness_property(x, 2, 1e-3, 4))
    (region,) = vnnlib.read(path).regions
    x64 = x.astype(np.float64)  # the float32 values, bounds computed in float64
    np.testing.assert_array_equal(region.lower, x64 - 1e-3)
    np.testing.assert_array_equal(region.upper, x64 + 1e-3)
    assert len(region.specs) == 3
    zero = vnnlib.parse(vnnlib.robustness_property(x, 0, 0.0, 2)).regions[0]
    np.testing.assert_array_equal(zero.lower, x64)
    np.testing.assert_array_equal(zero.upper, x64)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"epsilon": -0.1}, "epsilon must be >= 0"),
        ({"epsilon": float("nan")}, "epsilon contains NaN"),
        ({"epsilon": np.ones(5)}, "does not broadcast"),
        ({"label": 3}, "label 3 is out of range"),
        ({"label": -1}, "label -1 is out of range"),
        ({"label": 0.5}, "label must be an integer"),
        ({"num_classes": 1, "label": 0}, "at least 2"),
        ({"x": np.array([0.5, np.nan])}, "x contains 1 NaN"),
        ({"x": np.array([0.5, np.inf])}, "infinite"),
        ({"input_range": (1.0, 0.0)}, "low > high"),
        ({"input_range": (2.0, 3.0)}, "box is empty at feature 0"),
        ({"epsilon": np.inf}, "unbounded"),
    ],
)
def test_writer_refuses_bad_arguments(kwargs, words):
    args = {"x": np.array([0.5, 0.25]), "label": 0, "epsilon": 0.1, "num_classes": 3}
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=words):
        vnnlib.robustness_property(**args)


def test_written_properties_are_decided_as_worked_out_by_hand(bench):
    onnx_path = bench / "onnx" / "net.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for case, (eps, expected) in CASES.items():
        prop_path = bench / "vnnlib" / f"{case}.vnnlib"
        result = vn.verify(onnx_path, prop_path, timeout=30)
        assert result == expected, (case, result.detail)
        if expected == "unsat":
            assert result.counterexample is None
            continue
        x = result.counterexample
        assert x.shape == (2, 2) and x.dtype == np.float32
        assert np.all(x >= np.maximum(X - eps, 0.0))
        assert np.all(x <= np.minimum(X + eps, 1.0))
        y = session.run(None, {name: x[None]})[0].ravel()
        assert max(y[1], y[2]) >= y[0]  # onnxruntime: label 0 is overtaken
        np.testing.assert_allclose(y, result.output, rtol=0, atol=0)
        (region,) = vnnlib.read(prop_path).regions
        assert region.contains(x.ravel())
        assert any(spec.violated_by(y) for spec in region.specs)


# ---------------------------------------------------------------------------
# instances.csv
# ---------------------------------------------------------------------------


def test_run_instances_writes_results_csv_and_one_file_per_instance(
    bench, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the paths are relative to the CSV, not cwd
    out = tmp_path / "results"  # created
    seen = []
    rows = vnnlib.run_instances(
        bench / "instances.csv", results_dir=out, on_result=seen.append
    )
    assert seen == rows
    assert [(r["onnx"], r["vnnlib"], r["result"]) for r in rows] == [
        ("onnx/net.onnx", "vnnlib/holds.vnnlib", "unsat"),
        ("onnx/net.onnx", "vnnlib/flips.vnnlib", "sat"),
        ("onnx/net.onnx", "vnnlib/per_feature.vnnlib", "sat"),
    ]
    assert all(0 <= r["seconds"] < 30 for r in rows)
    assert rows[1]["result"].counterexample.shape == (2, 2)

    with open(out / "results.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["onnx", "vnnlib", "result", "seconds"]
    assert [row[:3] for row in table[1:]] == [
        [r["onnx"], r["vnnlib"], r["result"]] for r in rows
    ]
    assert [float(row[3]) for row in table[1:]] == pytest.approx(
        [r["seconds"] for r in rows], abs=1e-6
    )
    # Named after the CSV line (the blank line 2 counts) and the two stems.
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "0001_net_holds.txt",
        "0003_net_flips.txt",
        "0004_net_per_feature.txt",
        "results.csv",
    ]
    assert (out / "0001_net_holds.txt").read_text() == "unsat\n"
    for name, row in (
        ("0003_net_flips.txt", rows[1]),
        ("0004_net_per_feature.txt", rows[2]),
    ):
        text = (out / name).read_text()
        assert text == row["result"].vnncomp()
        assert text.startswith("sat\n(") and "(X_3 " in text and "(Y_2 " in text


def test_run_instances_without_results_dir_writes_nothing(bench, tmp_path):
    csv_path = tmp_path / "one.csv"
    csv_path.write_text(
        f"{bench / 'onnx' / 'net.onnx'},{bench / 'vnnlib' / 'holds.vnnlib'},10\n"
    )
    (row,) = vnnlib.run_instances(csv_path, attack=None)
    assert row["result"] == "unsat"
    assert row["onnx"] == str(bench / "onnx" / "net.onnx")  # absolute, as written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv"]


@pytest.mark.parametrize(
    "text, words",
    [
        (
            "onnx/net.onnx,vnnlib/holds.vnnlib,30\nonnx/net.onnx,vnnlib/holds.vnnlib\n",
            "line 2: expected 'onnx_path,vnnlib_path,timeout_seconds'",
        ),
        ("\n\nonnx/net.onnx,vnnlib/holds.vnnlib,30,extra\n", "line 3: expected"),
        ("onnx/net.onnx,vnnlib/holds.vnnlib,soon\n", "line 1: the timeout must be"),
        ("onnx/net.onnx,vnnlib/holds.vnnlib,-5\n", "line 1: the timeout must be"),
        (
            "onnx/net.onnx,vnnlib/missing.vnnlib,30\n",
            "line 1: no VNN-LIB property file",
        ),
        ("\n  \n", "lists no instances"),
    ],
)
def test_run_instances_refuses_malformed_lines_before_running(
    text, words, bench, tmp_path, monkeypatch
):
    def no_work(*args, **kwargs):
        raise AssertionError("an instance ran before the whole file was checked")

    monkeypatch.setattr(verify_module, "verify", no_work)
    csv_path = bench / f"bad_{abs(hash(text))}.csv"
    csv_path.write_text(text)
    with pytest.raises(InvalidInputError, match=words):
        vnnlib.run_instances(csv_path, results_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InvalidInputError, match="timeout"):
        vnnlib.run_instances(bench / "instances.csv", timeout=5)


# ---------------------------------------------------------------------------
# verinet verify --instances
# ---------------------------------------------------------------------------


def test_cli_runs_the_instances_and_prints_a_summary(bench, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["verify", "--instances", str(bench / "instances.csv")]
    assert main([*argv, "--results-dir", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert len(lines) == 4
    expected = [
        ("unsat", "onnx/net.onnx", "vnnlib/holds.vnnlib"),
        ("sat", "onnx/net.onnx", "vnnlib/flips.vnnlib"),
        ("sat", "onnx/net.onnx", "vnnlib/per_feature.vnnlib"),
    ]
    for line, (status, onnx, prop) in zip(lines, expected, strict=False):
        result, seconds, got_onnx, got_prop = line.split()
        assert (result, got_onnx, got_prop) == (status, onnx, prop)
        assert float(seconds) >= 0
    assert lines[-1] == "3 instances: 2 sat, 1 unsat, 0 unknown"
    assert (out / "results.csv").read_text().splitlines()[
        0
    ] == "onnx,vnnlib,result,seconds"
    assert len(list(out.glob("0*_net_*.txt"))) == 3


def test_cli_reports_a_malformed_instances_file_without_traceback(bench, capsys):
    bad = bench / "malformed.csv"
    bad.write_text("onnx/net.onnx,vnnlib/holds.vnnlib,30\nnot a line\n")
    assert main(["verify", "--instances", str(bad), "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("verinet: error: ") and "line 2" in captured.err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["net.onnx", "p.vnnlib", "--instances", "i.csv"], "not both"),
        (["net.onnx", "--instances", "i.csv"], "not both"),
        ([], "give MODEL and PROPERTY"),
        (["net.onnx"], "give MODEL and PROPERTY"),
        (["--instances", "i.csv", "--results", "r.txt"], "use --results-dir"),
        (["net.onnx", "p.vnnlib", "--results-dir", "out"], "needs --instances"),
    ],
)
def test_cli_needs_either_model_and_property_or_instances(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["verify", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: verinet verify" in err and words in err


def test_cli_single_instance_still_prints_the_status_last(bench, capsys):
    onnx_path = bench / "onnx" / "net.onnx"
    assert (
        main(["verify", str(onnx_path), str(bench / "vnnlib" / "flips.vnnlib"), "-q"])
        == 0
    )
    assert capsys.readouterr() == ("sat\n", "")


@pytest.mark.parametrize("flag, complete", [([], True), (["--bounds-only"], False)])
def test_cli_bounds_only_turns_the_search_off(bench, flag, complete, monkeypatch):
    """``--bounds-only`` reaches ``verify`` as ``complete=False``, for one
    instance and for an instances file alike."""
    seen = []
    real = verify_module.verify

    def spy(*args, **kwargs):
        seen.append(kwargs["complete"])
        return real(*args, **kwargs)

    monkeypatch.setattr(verify_module, "verify", spy)
    monkeypatch.setattr(vnnlib, "verify", spy)
    onnx, prop = bench / "onnx" / "net.onnx", bench / "vnnlib" / "holds.vnnlib"
    assert main(["verify", str(onnx), str(prop), "-q", *flag]) == 0
    argv = ["verify", "--instances", str(bench / "instances.csv"), "-q"]
    assert main([*argv, *flag]) == 0
    assert seen == [complete] * 4
