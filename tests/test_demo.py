"""The demo tells the whole story: two models trained and certified side by
side, the robust one exported to ONNX and certified again, and a folder of
reports and figures (run here with one epoch)."""

import verinet as vn  # noqa: I001 - verinet before keras

import json

import numpy as np
import pytest

from verinet import demo
from verinet.cli import main


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "out"
    out = demo.run(epochs=1, output=str(folder), verbose=0, curve_epsilons=(0, 0.05))
    return out, folder


def test_the_demo_writes_reports_the_onnx_file_and_figures(results):
    out, folder = results
    names = {p.name for p in folder.iterdir()}
    expected = {
        "report.json",
        "report.npz",
        "report.md",
        "robust.onnx",
        "training.png",
        "robustness_curve.png",
        "verdicts.png",
        "margins.png",
        "counterexamples.png",
    }
    assert expected <= names
    for name in expected:
        if name.endswith(".png"):
            assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = vn.CertificationReport.load(folder / "report.json")
    np.testing.assert_array_equal(saved.verified, out["crown-ibp"].verified)
    assert json.loads((folder / "report.json").read_text())["epsilon"] == 0.05
    text = (folder / "report.md").read_text()
    assert "![" in text and "robustness_curve.png" in text
    assert f"{out['crown-ibp'].verified_accuracy:.3f}" in text


def test_the_onnx_file_certifies_as_the_keras_model(results):
    out, folder = results
    onnx = vn.certify_onnx(
        folder / "robust.onnx",
        vn.datasets.digits()[1][0],
        vn.datasets.digits()[1][1],
        0.05,
        input_range=(0.0, 1.0),
    )
    np.testing.assert_array_equal(onnx.verified, out["crown-ibp"].verified)
    np.testing.assert_array_equal(out["onnx"].verified, out["crown-ibp"].verified)


def test_the_curves_and_reports_are_the_certified_models(results):
    out, _ = results
    for name in ("standard", "crown-ibp"):
        curve = out["curves"][name]
        assert curve["epsilons"] == [0.0, 0.05]
        # The curve's point at the demo's epsilon is that report's figure.
        assert curve["verified_accuracy"][1] == out[name].verified_accuracy
        assert out[name].epsilon == 0.05


def test_cli_demo_prints_the_table_and_where_the_files_are(tmp_path, capsys):
    folder = tmp_path / "cli-out"
    assert main(["demo", "--epochs", "1", "--output", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "verified (proof)" in printed and "crown-ibp" in printed
    assert str(folder) in printed and "report.md" in printed
    assert (folder / "report.json").exists()


def test_cli_demo_refuses_an_output_that_is_a_file(tmp_path, capsys):
    """Before any training: exit status 2 and the reason, no traceback."""
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["demo", "--epochs", "1", "--output", str(blocker), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Cannot create the demo output folder" in err and "taken" in err
    assert blocker.read_text() == "x"
