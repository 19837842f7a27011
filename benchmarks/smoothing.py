"""Randomized smoothing on digits: certified L2 accuracy and time per sample.

Trains the digits CNN of ``train_quality.py`` on Gaussian noise
(``compile(robust="smoothing", sigma=...)``, i.e.
``vn.objectives.GaussianNoise``), then runs Cohen et al.'s CERTIFY
(``vn.smoothing.SmoothedClassifier(model, sigma).certify``) on the first
``--test-size`` test samples with ``--n0`` selection and ``--n`` estimation
draws at ``--alpha``. It prints the base model's clean accuracy (on the
certified samples and on the whole test split), the smoothed classifier's
abstentions, its certified accuracy at each L2 radius of ``--radii`` (correct
and certified with a radius >= r; radius 0 is the smoothed classifier's
accuracy) and the time per certified sample.

Pixels are in [0, 1] and an 8x8 image has 64 of them, so an L2 radius of 0.5
is, e.g., every pixel moved by 0.0625.

Run:
    KERAS_BACKEND=torch .venv/bin/python benchmarks/smoothing.py
    ... --sigma 0.5 --epochs 60 --test-size 360 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import torch

import verinet as vn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_quality import digits_cnn  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    (x_train, y_train), (x_test_all, y_test_all) = vn.datasets.digits()
    x_test, y_test = x_test_all[: args.test_size], y_test_all[: args.test_size]
    keras.utils.set_random_seed(args.seed)
    model = digits_cnn(x_train.shape[1:], None)
    model.compile(keras.optimizers.Adam(1e-3), robust="smoothing", sigma=args.sigma)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    train_seconds = time.perf_counter() - start

    def clean_accuracy(x, y):
        return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))

    print(
        f"digits CNN, robust='smoothing' sigma={args.sigma}, {args.epochs} epochs "
        f"({train_seconds:.1f} s); {torch.get_num_threads()} torch thread(s), "
        f"device {vn.smoothing.sampling.model_device(model)}, load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print(
        f"base model clean accuracy: {clean_accuracy(x_test, y_test):.3f} on the "
        f"{len(x_test)} certified samples, "
        f"{clean_accuracy(x_test_all, y_test_all):.3f} on all {len(x_test_all)}",
        flush=True,
    )

    smoothed = vn.smoothing.SmoothedClassifier(model, sigma=args.sigma)
    report = smoothed.certify(
        x_test,
        y_test,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=0,
    )
    print(
        f"CERTIFY n0={args.n0} n={args.n} alpha={args.alpha} on {len(x_test)} "
        f"samples: {int(report.abstained.sum())} abstained, "
        f"{report.seconds:.1f} s ({report.seconds_per_sample:.3f} s/sample)"
    )
    print("\n| L2 radius | certified accuracy |")
    print("|---:|---:|")
    for r, acc in zip(args.radii, report.certified_accuracy(args.radii), strict=True):
        print(f"| {r:g} | {acc:.3f} |")


if __name__ == "__main__":
    main()
