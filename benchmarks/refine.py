"""Refine and CertifyEvery: does train → verify → retrain raise CROWN accuracy?

Trains the digits CNN of ``train_quality.py`` (``kernel_initializer="ibp"``,
Adam 1e-3, batch 64) with ``compile(robust="ibp", epsilon=0.1,
input_range=(0, 1))`` for a few epochs, with ``vn.callbacks.CertifyEvery``
certifying a validation split (held out of the training split) with CROWN
after every epoch; it reports each epoch's training time against the
certification's. Then it certifies the test split with CROWN + PGD, runs
``vn.refine`` (CROWN, sample weight 4 on the training samples CROWN does
not verify, PGD counterexamples added) and certifies the test split again.

Control: the same model (saved and reloaded, so optimizer state and epsilon
schedule match) trained on for as many epochs as refine ran, with plain
``fit`` and the best epoch on the validation split kept
(``CertifyEvery`` + ``EarlyStopping(restore_best_weights=True)``), so that
the difference is refine's weighting and counterexamples, not more epochs
or the choice of the best.

Run:
    KERAS_BACKEND=torch .venv/bin/python benchmarks/refine.py
    ... --epochs 30 --every 5 --rounds 5 --val-size 300 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import torch

import verinet as vn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_quality import digits_cnn  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch's training (listed before CertifyEvery)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def test_figures(model, x, y, epsilon):
    report = model.certify(
        x, y, epsilon, method="crown", attack="pgd", input_range=(0, 1), verbose=0
    )
    return report.clean_accuracy, report.attack_accuracy, report.verified_accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--weight", type=float, default=4.0)
    parser.add_argument("--val-size", type=int, default=300)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    (x_all, y_all), (x_test, y_test) = vn.datasets.digits()
    n_val = args.val_size
    x_train, y_train = x_all[:-n_val], y_all[:-n_val]
    x_val, y_val = x_all[-n_val:], y_all[-n_val:]
    eps = args.epsilon
    print(
        f"{len(x_train)} train / {n_val} validation / {len(x_test)} test, "
        f"epsilon {eps}, {args.epochs} IBP epochs, {args.threads} torch thread(s)"
    )

    keras.utils.set_random_seed(args.seed)
    model = digits_cnn(x_train.shape[1:], "ibp")
    model.compile(
        keras.optimizers.Adam(1e-3), robust="ibp", epsilon=eps, input_range=(0, 1)
    )
    timer = EpochTimer()
    certifier = vn.callbacks.CertifyEvery(
        x_val, y_val, method="crown", every=args.every
    )
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=64,
        verbose=0,
        callbacks=[timer, certifier],
    )
    print("\n| epoch | train s | CertifyEvery s | val verified | val PGD |")
    print("|---|---|---|---|---|")
    for h in certifier.history:
        print(
            f"| {h['epoch'] + 1} | {timer.seconds[h['epoch']]:.2f} | "
            f"{h['seconds']:.2f} | "
            f"{h['certified_accuracy']:.3f} | {h['attack_accuracy']:.3f} |"
        )
    train_s = float(np.mean(timer.seconds))
    certify_s = float(np.mean([h["seconds"] for h in certifier.history]))
    print(
        f"\nCertifyEvery: {certify_s:.2f} s per call on {n_val} samples "
        f"({certify_s / n_val * 1000:.2f} ms/sample) vs {train_s:.2f} s per "
        f"training epoch ({len(x_train)} samples): {certify_s / train_s:.1f}x; "
        f"over the fit {len(certifier.history)} calls, "
        f"{certify_s * len(certifier.history):.1f} s certifying vs "
        f"{sum(timer.seconds):.1f} s training"
    )

    before = test_figures(model, x_test, y_test, eps)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "ibp.keras")
        model.save(path)
        control = vn.load_model(path)

    start = time.perf_counter()
    history = vn.refine(
        model,
        x_train,
        y_train,
        (x_val, y_val),
        rounds=args.rounds,
        patience=args.patience,
        method="crown",
        weight=args.weight,
        verbose=1,
    )
    refine_s = time.perf_counter() - start
    after = test_figures(model, x_test, y_test, eps)

    epochs_run = len(history["round"])
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_certified_accuracy",
        mode="max",
        patience=epochs_run,
        restore_best_weights=True,
    )
    control_certifier = vn.callbacks.CertifyEvery(x_val, y_val, method="crown")
    start = time.perf_counter()
    control.fit(
        x_train,
        y_train,
        epochs=epochs_run,
        batch_size=64,
        verbose=0,
        callbacks=[control_certifier, stopper],
    )
    control_s = time.perf_counter() - start
    control_val = [h["certified_accuracy"] for h in control_certifier.history]
    control_after = test_figures(control, x_test, y_test, eps)

    print(
        "\n| round | val verified | val PGD | train unknown | train falsified "
        "| counterexamples added | s |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| 0 | {history['initial_val_certified_accuracy']:.3f} | "
        f"{history['initial_val_attack_accuracy']:.3f} | | | | |"
    )
    for i, number in enumerate(history["round"]):
        print(
            f"| {number} | {history['val_certified_accuracy'][i]:.3f} | "
            f"{history['val_attack_accuracy'][i]:.3f} | "
            f"{history['train_unknown'][i]} | {history['train_falsified'][i]} | "
            f"{history['counterexamples_added'][i]} | {history['seconds'][i]:.1f} |"
        )
    print(f"\nbest round {history['best_round']}, refine {refine_s:.1f} s")
    print(f"control epochs: val verified {[round(v, 3) for v in control_val]}")
    print("\n| model | clean | PGD | verified (CROWN) | seconds |")
    print("|---|---|---|---|---|")
    rows = [
        (f"IBP, {args.epochs} epochs", before, None),
        (f"+ refine ({epochs_run} rounds)", after, refine_s),
        (f"+ plain fit ({epochs_run} epochs, best kept)", control_after, control_s),
    ]
    for name, (clean, pgd, verified), seconds in rows:
        print(
            f"| {name} | {clean:.3f} | {pgd:.3f} | {verified:.3f} | "
            + ("" if seconds is None else f"{seconds:.1f}")
            + " |"
        )
    print(
        f"\nrefine: CROWN-verified test accuracy {before[2]:.3f} -> {after[2]:.3f} "
        f"({after[2] - before[2]:+.3f}); plain fit: {control_after[2]:.3f} "
        f"({control_after[2] - before[2]:+.3f})"
    )


if __name__ == "__main__":
    main()
