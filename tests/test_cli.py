"""The command line: export, certify (.keras and .onnx), verify, --help."""

import verinet as vn  # noqa: I001 - verinet before keras

import argparse
import json
import os
import re
import tempfile
import warnings

import keras
import numpy as np
import pytest
import torch

import verinet.cli as cli
from verinet import layers as L
from verinet.cli import build_parser, main
from verinet.onnx import export_onnx, read_metadata

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
    saved = vn.CertificationReport.load(out_report)
    assert saved.attack is None
    np.testing.assert_array_equal(saved.verified, report.verified)


def test_certify_auto_settles_samples_crown_leaves_unknown(trained, capsys):
    """``--method auto`` runs the complete stages: no sample CROWN proves is
    lost, and the report says which stage settled each one."""
    folder, report = trained
    out_report = folder / "auto_report.json"
    args = ["certify", str(folder / "model.keras"), "--epsilon", "0.06"]
    args += ["--limit", "12", "--method", "auto", "--timeout", "20"]
    args += ["-q", "-o", str(out_report)]
    assert main(args) == 0
    saved = vn.CertificationReport.load(out_report)
    crown = vn.certify(
        vn.load_model(folder / "model.keras"),
        saved.inputs,
        saved.labels,
        0.06,
        input_range=saved.input_range,
        attack=None,
        verbose=0,
    )
    assert saved.method == "auto"
    assert np.all(saved.verified[crown.verified])
    assert saved.unknown.sum() <= crown.unknown.sum()
    stages = saved.extra["settled_by"]
    assert len(stages) == 12 and set(saved.extra["stage_seconds"]) >= {"crown", "milp"}


def _channels_first_onnx(path, channels, height, width, classes=5):
    """A PyTorch CNN taking NCHW images, exported to ONNX; neither its
    kernel nor its dense layer is symmetric in H and W."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 3, (3, 2), padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(classes),
    ).eval()
    sample = torch.zeros(1, channels, height, width)
    net(sample)  # materializes the lazy layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            sample,
            os.fspath(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    return net


@pytest.mark.parametrize("height, width", [(6, 4), (5, 5)], ids=["6x4", "5x5"])
def test_certify_nchw_onnx_transposes_channels_last_data_correctly(
    tmp_path, capsys, height, width
):
    channels = 2
    path = tmp_path / "cnn.onnx"
    net = _channels_first_onnx(path, channels, height, width)
    rng = np.random.default_rng(0)
    x_nhwc = rng.uniform(0, 1, size=(12, height, width, channels)).astype("f4")
    x_nchw = np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2)))
    with torch.no_grad():
        torch_predictions = net(torch.from_numpy(x_nchw)).numpy().argmax(axis=1)
    y = torch_predictions.copy()
    y[:2] = (y[:2] + 1) % 5  # two misclassified samples
    np.savez(tmp_path / "data.npz", x=x_nhwc, y=y)

    out = tmp_path / "r.json"
    args = ["certify", str(path), "--data", str(tmp_path / "data.npz")]
    args += ["--epsilon", "0.01", "--attack", "none", "--quiet", "-o", str(out)]
    assert main(args) == 0
    got = vn.CertificationReport.load(out)
    expected = vn.certify(vn.from_onnx(path), x_nchw, y, 0.01, attack=None, verbose=0)
    # The CLI's predictions are PyTorch's own on the NCHW images ...
    np.testing.assert_array_equal(got.predictions, torch_predictions)
    # ... and its verdicts and margins those of certifying them directly.
    np.testing.assert_array_equal(got.verified, expected.verified)
    np.testing.assert_array_equal(got.falsified, expected.falsified)
    np.testing.assert_allclose(
        got.margin_lower, expected.margin_lower, rtol=1e-5, atol=1e-6
    )
    assert 0 < got.verified.sum() < 12  # a meaningful comparison


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


# --- output paths are checked before any work -----------------------------------


def _unwritable_folder(tmp_path):
    """A folder in which no file can be created, even by root."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (str(folder), "/sys"):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no unwritable folder on this machine")


def _bad_output(kind, tmp_path):
    """``(path, words the error must contain)`` for an unusable output path."""
    if kind == "missing-folder":
        return str(tmp_path / "no" / "such" / "out.json"), "does not exist"
    if kind == "a-folder":
        return str(tmp_path), "is a directory"
    return os.path.join(_unwritable_folder(tmp_path), "out.json"), "not writable"


@pytest.mark.parametrize("kind", ["missing-folder", "a-folder", "read-only-folder"])
@pytest.mark.parametrize("command", ["certify", "export", "verify"])
def test_unusable_output_path_fails_before_any_work(
    command, kind, tmp_path, monkeypatch, capsys
):
    path, words = _bad_output(kind, tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("the command started working before checking -o")

    monkeypatch.setattr(cli, "_load_model", no_work)
    monkeypatch.setattr(vn.vnnlib, "verify", no_work)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"unused: the check comes first")
    argv = {
        "certify": ["certify", str(model), "--epsilon", "0.1", "-o", path],
        "export": ["export", str(tmp_path / "m.keras"), "-o", path],
        "verify": ["verify", str(model), "p.vnnlib", "--results", path],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("verinet: error: ") and words in err
    assert repr(path) in err
    assert not os.path.exists(path) or os.path.isdir(path)


# --- --limit ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-350", "0"])
@pytest.mark.parametrize("option", ["--limit", "--batch-size"])
def test_sample_counts_must_be_positive_integers(option, value, trained, capsys):
    model = str(trained[0] / "model.keras")
    with pytest.raises(SystemExit) as info:
        main(["certify", model, "--epsilon", "0.1", option, value])
    assert info.value.code == 2  # argparse's usage error, before any work
    err = capsys.readouterr().err
    assert f"argument {option}: must be a positive integer, got {value}" in err


def test_limit_defaults_to_all_samples():
    parser = build_parser()
    base = ["certify", "m.onnx", "--epsilon", "0.1"]
    assert parser.parse_args(base).limit is None
    assert parser.parse_args([*base, "--limit", "all"]).limit is None
    assert parser.parse_args([*base, "--limit", "7"]).limit == 7
    assert parser.parse_args(base).batch_size == 256  # vn.certify's default
    assert parser.parse_args([*base, "--batch-size", "16"]).batch_size == 16


# --- --help shows every default -------------------------------------------------


def _subparsers(parser):
    (action,) = [
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]
    return action.choices


@pytest.mark.parametrize("command", ["demo", "export", "certify", "verify"])
def test_help_shows_the_default_of_every_option(command):
    sub = _subparsers(build_parser())[command]
    text = sub.format_help()
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("  -")]
    blocks = {}
    for k, i in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else len(lines)
        block = []
        for line in lines[i:stop]:
            if not line.strip():
                break
            block.append(line)
        blocks[lines[i].split()[0].rstrip(",")] = " ".join(" ".join(block).split())
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        block = blocks[action.option_strings[0]]
        if action.required:
            assert "(required)" in block, block
        elif isinstance(action.default, str | int | float | list) and not isinstance(
            action.default, bool
        ):
            shown = str(action.default)
            assert f"(default: {shown})" in block, block
        else:
            assert "(default: " in block, block


# --- progress --------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_certify_shows_a_progress_bar_unless_quiet(trained, tmp_path, capsys):
    folder, _ = trained
    base = ["certify", str(folder / "model.keras"), "--epsilon", str(EPSILON)]
    base += ["--limit", "30", "--attack", "none", "-o", str(tmp_path / "r.json")]
    assert main(base) == 0
    out = _ANSI.sub("", capsys.readouterr().out)
    # Keras's bar reaches the number of samples certified ...
    assert re.search(r"(^|\r)30/30 ", out, flags=re.M), out
    # ... and the summary still ends the output, on lines of its own.
    summary = vn.CertificationReport.load(tmp_path / "r.json").summary()
    assert out.endswith(f"\n{summary}\nReport written to {tmp_path / 'r.json'}\n")

    assert main([*base, "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert "30/30" not in quiet and "\r" not in quiet
    assert quiet.splitlines()[0].startswith("Certification: ")


def _two_input_network(tmp_path):
    model = vn.Sequential([L.Input((2,)), L.Dense(2), L.ReLU(), L.Dense(2)])
    model.layers[0].set_weights([np.eye(2), np.zeros(2)])
    model.layers[2].set_weights([np.eye(2), np.array([1.0, 0.0])])
    onnx_path = tmp_path / "net.onnx"
    export_onnx(model, onnx_path)
    header = "".join(f"(declare-const X_{i} Real)\n" for i in range(2))
    header += "".join(f"(declare-const Y_{i} Real)\n" for i in range(2))
    prop = tmp_path / "two_regions.vnnlib"
    # y0 = relu(x0) + 1 > relu(x1) = y1 on both regions: unsat.
    prop.write_text(
        header
        + "(assert (or (and (>= X_0 -1) (<= X_0 0) (>= X_1 -1) (<= X_1 0.5))\n"
        + "            (and (>= X_0 0) (<= X_0 1) (>= X_1 -1) (<= X_1 0.5))))\n"
        + "(assert (<= Y_0 Y_1))\n"
    )
    return onnx_path, prop


def test_verify_reports_progress_on_stderr_and_the_answer_last_on_stdout(
    tmp_path, capsys
):
    onnx_path, prop = _two_input_network(tmp_path)
    assert main(["verify", str(onnx_path), str(prop)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "unsat\n"  # VNN-COMP tools read this line
    progress = captured.err.splitlines()
    # One answer per region, in order, then nothing else.
    answers = [line for line in progress if re.search(r"region \d/2: \w+sat", line)]
    assert [re.search(r"region (\d)/2: (\w+)", a).groups() for a in answers] == [
        ("1", "unsat"),
        ("2", "unsat"),
    ]
    assert progress[-1] == answers[-1]

    assert main(["verify", str(onnx_path), str(prop), "--quiet"]) == 0
    assert capsys.readouterr() == ("unsat\n", "")


def test_verify_python_api_is_quiet_by_default(tmp_path, capsys):
    onnx_path, prop = _two_input_network(tmp_path)
    assert vn.verify(onnx_path, prop) == "unsat"
    assert capsys.readouterr() == ("", "")
    assert vn.verify(onnx_path, prop, verbose=1) == "unsat"
    err = capsys.readouterr().err
    assert re.search(r"region 2/2: unsat", err)


# --- loading .keras files --------------------------------------------------------


def test_load_model_returns_the_verinet_classes(trained):
    folder, _ = trained
    loaded = vn.load_model(folder / "model.keras", compile=False)
    assert type(loaded) is vn.Sequential
    kinds = [type(layer) for layer in loaded.layers]
    assert kinds[1] is L.Dense and L.BatchNormalization in kinds
    x = vn.datasets.digits()[1][0][:16]
    original = keras.saving.load_model(folder / "model.keras", compile=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(original(x)),
        rtol=1e-6,
    )


def test_load_model_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(vn.InvalidInputError, match="No model file"):
        vn.load_model(tmp_path / "missing.keras")
    onnx_file = tmp_path / "net.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(vn.InvalidInputError, match="vn.from_onnx"):
        vn.load_model(onnx_file)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(vn.InvalidInputError, match="Cannot load Keras model"):
        vn.load_model(broken)


def test_export_refuses_an_unhashed_report_unless_allowed(trained, tmp_path, capsys):
    folder, report = trained
    data = report.to_dict()  # rewritten as verinet 0.1 wrote it: no hashes
    data["format"] = "verinet.CertificationReport/1"
    for key in ("weights_sha256", "onnx_weights_sha256", "report_sha256"):
        data.pop(key, None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    args = ["export", str(folder / "model.keras"), "-o", str(tmp_path / "m.onnx")]
    args += ["--report", str(old)]
    assert main(args) == 2
    assert "--allow-unhashed-report" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    assert main([*args, "--allow-unhashed-report"]) == 0
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["verinet.report_weights"] == "unchecked"
    assert float(meta["verinet.verified_accuracy"]) == report.verified_accuracy
