"""The demo: train on the embedded digits data, then certify the test split."""

from __future__ import annotations

import time

import keras

from verinet.certify import certify
from verinet.datasets import digits
from verinet.layers import Dense, Flatten, Input, ReLU
from verinet.models import Sequential


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


def run(epochs: int = 20, epsilons=(0.01, 0.03), seed: int = 0, verbose: int = 1):
    """Train a standard model on digits and certify its test split.

    Args:
        epochs: training epochs with plain ``fit``.
        epsilons: L∞ radii to certify at (pixels are in ``[0, 1]``).
        seed: random seed.
        verbose: 0 for silence, 1 for the printed report.

    Returns:
        A dict ``{(method, epsilon): CertificationReport}``.
    """
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = digits()
    say = print if verbose else (lambda *a, **k: None)
    say(f"verinet demo: digits, {len(x_train)} train / {len(x_test)} test images, 8x8")
    model = build_mlp()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    say(
        f"trained {epochs} epochs in {time.perf_counter() - start:.1f} s, "
        f"test accuracy {accuracy:.4f}\n"
    )
    reports = {}
    for epsilon in epsilons:
        for method in ("ibp", "crown"):
            report = certify(
                model,
                x_test,
                y_test,
                epsilon,
                method=method,
                attack="pgd",
                input_range=(0.0, 1.0),
                verbose=0,
            )
            reports[(method, epsilon)] = report
            say(report.summary() + "\n")
    say("method  epsilon  clean   verified  attack  (verified <= robust <= attack)")
    for (method, epsilon), r in reports.items():
        say(
            f"{method:<7} {epsilon:<8g} {r.clean_accuracy:.3f}   "
            f"{r.verified_accuracy:.3f}     {r.attack_accuracy:.3f}"
        )
    return reports
