"""alpha-CROWN against CROWN on trained networks: verified fraction and margins.

Trains the digits CNN of ``train_quality.py`` (or, with ``--fashion-mnist``,
its Fashion-MNIST variant) with a certified objective, then bounds the
margins ``f_y - f_j`` of the first ``--test-size`` test samples with CROWN
and with alpha-CROWN (``vn.bounds.AlphaCROWN(iterations=...)``) in the same
run. It prints, for each method, the fraction of correctly classified samples
whose every margin bound is positive (verified by bounds alone, no attack),
the mean of each sample's smallest margin bound, and the time, and the
alpha/CROWN ratios. alpha-CROWN starts from CROWN's slopes and keeps the best
bound, so its verified fraction is never lower and its margins never looser.

Run:
    KERAS_BACKEND=torch .venv/bin/python benchmarks/alpha_crown.py
    ... --objective ibp --epochs 20 --epsilon 0.1
    ... --fashion-mnist   # needs the Debian package dataset-fashion-mnist
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
from train_quality import digits_cnn, fashion_cnn  # noqa: E402


def margin_summary(model, x, y, epsilon, method):
    """(verified fraction, mean smallest margin bound, seconds) for ``method``.

    Only correctly classified samples can be verified; the mean smallest
    margin is over all samples (column ``y`` is ``+inf`` and skipped).
    """
    start = time.perf_counter()
    margins = vn.margin_bounds(
        model, x, y, epsilon, method=method, input_range=(0.0, 1.0)
    )
    seconds = time.perf_counter() - start
    smallest = np.min(margins, axis=1)
    correct = np.argmax(model.predict(x, verbose=0), axis=1) == y
    verified = np.logical_and(correct, smallest > 0)
    return float(verified.mean()), float(smallest.mean()), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="crown", help="compile(robust=)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--train-epsilon", type=float, default=0.1, help="epsilon of training"
    )
    parser.add_argument(
        "--epsilon", type=float, default=0.1, help="epsilon of the bounds"
    )
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--fashion-mnist", action="store_true")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.fashion_mnist:
        (x_train, y_train), (x_test, y_test) = vn.datasets.fashion_mnist()
        build = fashion_cnn
    else:
        (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
        build = digits_cnn
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    x_test, y_test = x_test[: args.test_size], y_test[: args.test_size]
    keras.utils.set_random_seed(args.seed)
    model = build(x_train.shape[1:], "ibp")
    model.compile(
        keras.optimizers.Adam(1e-3),
        robust=args.objective,
        epsilon=args.train_epsilon,
        input_range=(0.0, 1.0),
    )
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    print(
        f"{'Fashion-MNIST' if args.fashion_mnist else 'digits'} CNN, "
        f"robust={args.objective!r} {args.epochs} epochs at eps "
        f"{args.train_epsilon}; bounds at eps {args.epsilon} on "
        f"{len(x_test)} test samples, {args.threads} torch thread(s)",
        flush=True,
    )
    methods = {
        "crown": "crown",
        "alpha-crown": vn.bounds.AlphaCROWN(iterations=args.iterations),
    }
    rows = {
        name: margin_summary(model, x_test, y_test, args.epsilon, method)
        for name, method in methods.items()
    }
    print("\n| method | verified | mean smallest margin bound | time |")
    print("|---|---|---|---|")
    for name, (verified, margin, seconds) in rows.items():
        print(f"| {name} | {verified:.3f} | {margin:.4f} | {seconds:.2f} s |")
    (v_c, m_c, t_c), (v_a, m_a, t_a) = rows["crown"], rows["alpha-crown"]
    print(
        f"\nalpha-CROWN: verified {v_a - v_c:+.3f}, mean margin "
        f"{m_a - m_c:+.4f} (tighter when positive), time {t_a / t_c:.1f}x CROWN"
    )


if __name__ == "__main__":
    main()
