"""The command line: export, certify (.keras and .onnx), verify, --help."""

import verinet as vn  # noqa: I001 - verinet before keras

import json
import os
import warnings

import keras
import numpy as np
import pytest
import torch

from verinet import layers as L
from verinet.cli import main
from verinet.deploy import export_onnx, read_metadata

EPSILON = 0.02
SAMPLES = 80


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train → certify → save: a digits model with BN and dropout."""
    folder = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(2)
    (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
    model = vn.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Flatten(),
            L.Dense(48),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dropout(0.2),
            L.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=5, batch_size=128, verbose=0)
    report = model.certify(
        x_test[:SAMPLES],
        y_test[:SAMPLES],
        EPSILON,
        method="crown",
        input_range=(0.0, 1.0),
        verbose=0,
    )
    model.save(folder / "model.keras")
    report.save(folder / "report.json")
    return folder, report


@pytest.mark.parametrize("command", ["demo", "export", "certify", "verify"])
def test_help_of_each_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: verinet {command}" in out
    expected = {"demo": "--epochs", "export": "--report", "certify": "--epsilon"}
    assert expected.get(command, "--timeout") in out


def test_train_certify_deploy_export_then_certify_the_onnx_file(trained, capsys):
    folder, report = trained
    assert 0.0 < report.verified_accuracy < 1.0  # a meaningful comparison
    onnx_path = folder / "model.onnx"
    code = main(
        [
            "export",
            str(folder / "model.keras"),
            "-o",
            str(onnx_path),
            "--report",
            str(folder / "report.json"),
        ]
    )
    assert code == 0
    assert "Exported" in capsys.readouterr().out
    meta = read_metadata(onnx_path)
    assert meta["weights_sha256_ok"]
    assert float(meta["verinet.verified_accuracy"]) == report.verified_accuracy
    assert float(meta["verinet.epsilon"]) == EPSILON

    out_report = folder / "onnx_report.json"
    args = ["certify", str(onnx_path), "--data", "digits", "--epsilon", str(EPSILON)]
    args += ["--method", "crown", "--limit", str(SAMPLES), "-o", str(out_report)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "Report written" in out
    onnx_report = vn.CertificationReport.load(out_report)
    assert onnx_report.input_range == (0.0, 1.0)  # digits' pixel range
    assert onnx_report.verified_accuracy == report.verified_accuracy
    np.testing.assert_array_equal(onnx_report.verified, report.verified)
    np.testing.assert_array_equal(onnx_report.falsified, report.falsified)


def test_certify_a_keras_file(trained, capsys):
    folder, report = trained
    out_report = folder / "keras_report.json"
    args = ["certify", str(folder / "model.keras"), "--epsilon", str(EPSILON)]
    args += ["--limit", str(SAMPLES), "--attack", "none", "-o", str(out_report)]
    assert main(args) == 0
    data = json.loads(out_report.read_text())
    assert data["attack"] is None
    assert data["verified"] == report.verified.tolist()


def test_certify_nchw_onnx_with_channels_last_data(tmp_path, capsys):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(2 * 4 * 4, 10),
    ).eval()
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            torch.zeros(1, 1, 8, 8),
            os.fspath(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    args = ["certify", str(path), "--epsilon", "0.01", "--limit", "8"]
    args += ["-o", str(tmp_path / "r.json")]
    assert main(args) == 0
    assert "transposing" in capsys.readouterr().out
    assert vn.CertificationReport.load(tmp_path / "r.json").num_samples == 8


def test_verify_prints_the_answer_and_writes_results(tmp_path, capsys):
    model = vn.Sequential([L.Input((2,)), L.Dense(2), L.ReLU(), L.Dense(2)])
    model.layers[0].set_weights([np.eye(2), np.zeros(2)])
    model.layers[2].set_weights([np.eye(2), np.array([1.0, 0.0])])
    onnx_path = tmp_path / "net.onnx"
    export_onnx(model, onnx_path)
    header = "".join(f"(declare-const X_{i} Real)\n" for i in range(2))
    header += "".join(f"(declare-const Y_{i} Real)\n" for i in range(2))
    cases = {"unsat": (-1, 0.5), "sat": (-1, 3.0)}  # y0 = relu(x0)+1, y1 = relu(x1)
    for expected, (low, high) in cases.items():
        prop = tmp_path / f"{expected}.vnnlib"
        prop.write_text(
            header
            + "".join(
                f"(assert (>= X_{i} {low}))\n(assert (<= X_{i} {high}))\n"
                for i in range(2)
            )
            + "(assert (<= Y_0 Y_1))\n"
        )
        results = tmp_path / f"{expected}.txt"
        code = main(["verify", str(onnx_path), str(prop), "--results", str(results)])
        assert code == 0
        assert capsys.readouterr().out.strip() == expected
        text = results.read_text()
        assert text.splitlines()[0] == expected
        if expected == "sat":
            assert "(X_0 " in text and "(Y_1 " in text


def test_errors_are_reported_without_traceback(trained, tmp_path, capsys):
    code = main(["certify", str(tmp_path / "missing.onnx"), "--epsilon", "0.1"])
    assert code == 2
    assert "verinet: error: No model file" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all")
    assert main(["certify", str(bad), "--epsilon", "0.1"]) == 2
    assert "not a readable ONNX file" in capsys.readouterr().err
    model = str(trained[0] / "model.keras")
    assert main(["certify", model, "--epsilon", "0.1", "--data", "mnist"]) == 2
    assert "Unknown data 'mnist'" in capsys.readouterr().err
