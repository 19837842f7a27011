"""Robust-training quality: clean / PGD / verified accuracy per objective.

Trains the digits CNN (Conv2D 32 3x3 same, ReLU, Conv2D 64 4x4 stride 2 same,
ReLU, Flatten, Dense 256, ReLU, Dense 10; Adam 1e-3, batch 64) with each
objective at epsilon 0.1 (L-infinity, input_range (0, 1)) and certifies the
test split with ``method="crown", attack="pgd"``.

Run:
    KERAS_BACKEND=torch .venv/bin/python benchmarks/train_quality.py --epochs 40
    ... --objectives ibp crown --epochs 100
    ... --fashion-mnist   # needs the Debian package dataset-fashion-mnist
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras

import verinet as vn
from verinet import layers


def cnn(input_shape, init, first_kernel, first_stride):
    """Conv 32 / Conv 64 4x4 stride 2 / Dense 256 / Dense 10, ReLU between."""
    kwargs = {"kernel_initializer": init} if init else {}
    first = layers.Conv2D(
        32, first_kernel, strides=first_stride, padding="same", **kwargs
    )
    return vn.Sequential(
        [
            layers.Input(input_shape),
            first,
            layers.ReLU(),
            layers.Conv2D(64, 4, strides=2, padding="same", **kwargs),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(256, **kwargs),
            layers.ReLU(),
            layers.Dense(10, **kwargs),
        ]
    )


def digits_cnn(input_shape, init):
    """The digits network of the issue: first Conv2D 32 3x3, stride 1."""
    return cnn(input_shape, init, 3, 1)


def fashion_cnn(input_shape, init):
    """On 28x28 inputs the first Conv2D is 4x4 with stride 2."""
    return cnn(input_shape, init, 4, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=["standard", "pgd", "trades", "ibp", "crown"],
    )
    parser.add_argument("--fashion-mnist", action="store_true")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.fashion_mnist:
        (x_train, y_train), (x_test, y_test) = vn.datasets.fashion_mnist()
        build = fashion_cnn
    else:
        (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
        build = digits_cnn
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    x_test, y_test = x_test[: args.test_size], y_test[: args.test_size]
    eps = args.epsilon
    print(
        f"{len(x_train)} train / {len(x_test)} test, epsilon {eps}, "
        f"{args.epochs} epochs, backend {keras.backend.backend()}"
    )
    rows = []
    for name in args.objectives:
        keras.utils.set_random_seed(args.seed)
        certified = name in ("ibp", "crown")
        model = build(x_train.shape[1:], "ibp" if certified else None)
        model.compile(
            keras.optimizers.Adam(1e-3),
            robust=name,
            epsilon=eps,
            input_range=(0.0, 1.0),
        )
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
        seconds = (time.perf_counter() - start) / args.epochs
        report = model.certify(
            x_test,
            y_test,
            eps,
            method="crown",
            attack="pgd",
            input_range=(0, 1),
            verbose=0,
        )
        rows.append((name, report, seconds))
        print(
            f"{name:<9} clean {report.clean_accuracy:.3f}  PGD "
            f"{report.attack_accuracy:.3f}  verified {report.verified_accuracy:.3f}"
            f"  {seconds:.2f} s/epoch",
            flush=True,
        )
    print("\n| objective | clean | PGD | verified (CROWN) | s/epoch |")
    print("|---|---|---|---|---|")
    for name, r, seconds in rows:
        print(
            f"| {name} | {r.clean_accuracy:.3f} | {r.attack_accuracy:.3f} | "
            f"{r.verified_accuracy:.3f} | {seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
