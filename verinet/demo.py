"""The demo: the whole training-verification loop on the embedded digits data.

Trains a standard and a CROWN-IBP model, certifies both (bounds and the
attack), prints them side by side, deploys and exports the robust one to
ONNX, certifies the ONNX file, and writes ``report.json`` (with its
``report.npz``), ``report.md`` and the figures to an output folder.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np

from verinet.certify import certify, robustness_curve
from verinet.datasets import digits
from verinet.layers import Dense, Flatten, Input, ReLU
from verinet.models import Sequential

#: Radii of the robustness curve figure (pixels are in [0, 1]).
CURVE_EPSILONS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1)


def build_mlp() -> Sequential:
    """The digits MLP: 64-256-256-10 with ReLU."""
    return Sequential(
        [
            Input((8, 8, 1)),
            Flatten(),
            Dense(256),
            ReLU(),
            Dense(256),
            ReLU(),
            Dense(10),
        ],
        name="digits_mlp",
    )


def _train(robust: str, epsilon: float, epochs: int, x, y, verbose: int):
    model = build_mlp()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        robust=robust,
        epsilon=epsilon if robust != "standard" else 0.0,
        input_range=(0.0, 1.0),
    )
    start = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=64, verbose=verbose)
    return model, history, time.perf_counter() - start


def _table(rows) -> list[str]:
    """Side-by-side figures of the certified models."""
    names = [name for name, _, _ in rows]
    width = max(12, *(len(n) for n in names))
    lines = ["".ljust(22) + "".join(n.rjust(width + 2) for n in names)]
    figures = [
        ("training (s)", lambda r, s: f"{s:.1f}"),
        ("clean accuracy", lambda r, s: f"{r.clean_accuracy:.3f}"),
        ("verified (proof)", lambda r, s: f"{r.verified_accuracy:.3f}"),
        ("attack accuracy", lambda r, s: f"{r.attack_accuracy:.3f}"),
        ("falsified", lambda r, s: str(int(r.falsified.sum()))),
        ("unknown", lambda r, s: str(int(r.unknown.sum()))),
        ("certify time (s)", lambda r, s: f"{r.seconds:.1f}"),
    ]
    for label, value in figures:
        cells = "".join(value(r, s).rjust(width + 2) for _, r, s in rows)
        lines.append(label.ljust(22) + cells)
    return lines


def _figures(folder, robust, standard, standard_model, robust_history, curves):
    """Write the figures; return ``{title: file name}``."""
    import matplotlib.figure

    from verinet import plot

    files = {}

    def save(fig, name, title):
        fig.savefig(os.path.join(folder, name), dpi=110, bbox_inches="tight")
        files[title] = name

    save(
        plot.training_curves(robust_history),
        "training.png",
        "CROWN-IBP training (loss, accuracy, epsilon ramp)",
    )
    fig = matplotlib.figure.Figure(figsize=(10, 4))
    for ax, (name, curve) in zip(fig.subplots(1, 2), curves.items(), strict=True):
        plot.robustness_curve(curve, ax=ax)
        ax.set_title(name)
    save(fig, "robustness_curve.png", "Verified and attack accuracy against epsilon")
    save(robust.plot("verdicts"), "verdicts.png", "Verdicts per class (CROWN-IBP)")
    save(robust.plot("margins"), "margins.png", "Smallest margin bounds (CROWN-IBP)")
    save(
        standard.plot("counterexamples", model=standard_model, count=8),
        "counterexamples.png",
        "Counterexamples the attack found (standard model)",
    )
    return files


def _markdown(epsilon, rows, onnx_line, analysis, files) -> str:
    lines = [
        "# verinet demo",
        "",
        f"Digits (8x8, pixels in [0, 1]); L-infinity epsilon {epsilon:g}; "
        "CROWN bounds and the PGD attack.",
        "",
        "```",
        *_table(rows),
        "```",
        "",
        "verified <= robust accuracy <= attack accuracy: a verified sample is "
        "proven, a falsified one has a real counterexample, an unknown one is "
        "neither.",
        "",
        "## The CROWN-IBP model",
        "",
        "```",
        analysis,
        "```",
        "",
        onnx_line,
        "",
    ]
    for title, name in files.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines)


def run(
    epochs: int = 20,
    epsilon: float = 0.05,
    output: str | None = "demo-output",
    seed: int = 0,
    verbose: int = 1,
    curve_epsilons=CURVE_EPSILONS,
) -> dict:
    """Train, certify, compare, deploy and export on the digits data.

    Args:
        epochs: training epochs of each model.
        epsilon: the L-infinity radius the robust model trains for and both
            models are certified at.
        output: folder for ``report.json`` / ``report.npz`` (the robust
            model's certificate), ``report.md``, ``robust.onnx`` and the
            figures (created if missing); ``None`` writes nothing.
        seed: random seed.
        verbose: 0 for silence, 1 for progress bars and the printed results.
        curve_epsilons: radii of the robustness curves.

    Returns:
        A dict with the two reports (``"standard"``, ``"crown-ibp"``), the
        ONNX report (``"onnx"``), the curves (``"curves"``) and the files
        written (``"files"``).

    Example:
        >>> results = verinet.demo.run(epochs=5, output=None)
        >>> results["crown-ibp"].verified_accuracy
    """
    from verinet.deploy import deploy
    from verinet.onnx import certify_onnx, export_onnx

    keras.utils.set_random_seed(seed)
    say = print if verbose else (lambda *a, **k: None)
    (x_train, y_train), (x_test, y_test) = digits()
    say(
        f"verinet demo: digits, {len(x_train)} train / {len(x_test)} test images "
        f"(8x8), L-infinity epsilon {epsilon:g}\n"
    )
    trained = {}
    for name, robust in (("standard", "standard"), ("crown-ibp", "crown-ibp")):
        say(f"training the {name} model ({epochs} epochs)")
        trained[name] = _train(robust, epsilon, epochs, x_train, y_train, verbose)
    reports, curves = {}, {}
    for name, (model, _, _) in trained.items():
        say(f"certifying the {name} model: CROWN bounds, then the PGD attack")
        reports[name] = certify(
            model, x_test, y_test, epsilon, input_range=(0.0, 1.0), verbose=verbose
        )
        curves[name] = robustness_curve(
            model,
            x_test,
            y_test,
            list(curve_epsilons),
            input_range=(0.0, 1.0),
            verbose=0,
        )
    rows = [(name, reports[name], trained[name][2]) for name in trained]
    say("")
    for line in _table(rows):
        say(line)
    say("\nverified <= robust accuracy <= attack accuracy\n")

    robust_model = trained["crown-ibp"][0]
    results = {**reports, "curves": curves, "files": []}
    folder = output if output is not None else None
    if folder is None:
        import tempfile

        scratch = tempfile.TemporaryDirectory()
        onnx_path = os.path.join(scratch.name, "robust.onnx")
    else:
        os.makedirs(folder, exist_ok=True)
        onnx_path = os.path.join(folder, "robust.onnx")
    deployed = deploy(robust_model)
    export_onnx(deployed, onnx_path, report=reports["crown-ibp"])
    onnx_report = certify_onnx(
        onnx_path, x_test, y_test, epsilon, input_range=(0.0, 1.0), verbose=0
    )
    same = bool(
        np.array_equal(onnx_report.verified, reports["crown-ibp"].verified)
        and np.array_equal(onnx_report.falsified, reports["crown-ibp"].falsified)
    )
    onnx_line = (
        f"Deployed and exported to ONNX; certifying the file: verified "
        f"{onnx_report.verified_accuracy:.3f}, attack accuracy "
        f"{onnx_report.attack_accuracy:.3f} "
        f"({'the same verdicts as the Keras model' if same else 'verdicts differ'})."
    )
    say(onnx_line)
    results["onnx"] = onnx_report
    analysis = reports["crown-ibp"].analyze()
    if folder is None:
        scratch.cleanup()
        return results
    reports["crown-ibp"].save(os.path.join(folder, "report.json"))
    files = _figures(
        folder,
        reports["crown-ibp"],
        reports["standard"],
        trained["standard"][0],
        trained["crown-ibp"][1],
        curves,
    )
    with open(os.path.join(folder, "report.md"), "w") as handle:
        handle.write(_markdown(epsilon, rows, onnx_line, analysis.text, files))
    written = ["report.json", "report.npz", "report.md", "robust.onnx", *files.values()]
    results["files"] = [os.path.join(folder, name) for name in written]
    say(f"\nwrote {len(written)} files to {os.path.abspath(folder)}/:")
    for name in written:
        say(f"  {name}")
    return results
