"""What certify's attack adds to a CROWN certification, on an MLP and a CNN.

For each network (trained briefly with IBP on the embedded digits data) it
times, interleaved and in one process, ``certify(method="crown")`` with
``attack=None``, with the default attack (``TargetedPGD``) and with the former
default (untargeted ``PGD(steps=30, restarts=2)``), and prints each attack's
added time as a fraction of the CROWN-only time (minimum over ``--repeats``
rounds, so that load from other processes counts least), and the falsified
and unknown counts.

Usage:
    KERAS_BACKEND=torch python benchmarks/certify_attack_cost.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import torch

import verinet as vn
from verinet import layers as L

EPSILON = 0.05
ATTACKS = {
    "none": {"attack": None},
    "new (TargetedPGD)": {},
    "old (PGD 30x2)": {"attack_options": {"loss": "margin"}},
}


def networks():
    """The README's MLP and a small CNN, as (name, layers) pairs."""
    return [
        (
            "MLP 64-256-10",
            [L.Flatten(), L.Dense(256, kernel_initializer="ibp"), L.ReLU()],
        ),
        (
            "CNN 16c3-32c3s2-64",
            [
                L.Conv2D(16, 3, padding="same"),
                L.ReLU(),
                L.Conv2D(32, 3, strides=2, padding="same"),
                L.ReLU(),
                L.Flatten(),
                L.Dense(64),
                L.ReLU(),
            ],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=360)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
    x, y = x_test[: args.samples], y_test[: args.samples]
    print(f"digits, {len(x)} test samples, L-inf eps {EPSILON}, CROWN bounds")
    for name, body in networks():
        keras.utils.set_random_seed(0)
        model = vn.Sequential([L.Input((8, 8, 1)), *body, L.Dense(10)])
        model.compile("adam", robust="ibp", epsilon=EPSILON, input_range=(0, 1))
        model.fit(x_train, y_train, epochs=args.epochs, verbose=0)
        times = {key: [] for key in ATTACKS}
        reports = {}
        for _ in range(args.repeats):
            for key, options in ATTACKS.items():
                start = time.perf_counter()
                reports[key] = model.certify(
                    x, y, EPSILON, input_range=(0, 1), verbose=0, **options
                )
                times[key].append(time.perf_counter() - start)
        crown = min(times["none"])
        print(f"\n{name}: CROWN alone {crown:.2f} s")
        for key in ATTACKS:
            if key == "none":
                continue
            extra = (min(times[key]) - crown) / crown
            report = reports[key]
            print(
                f"  {key:<18} attack = {extra:5.2f} x CROWN   falsified "
                f"{int(report.falsified.sum()):>4}   unknown "
                f"{int(report.unknown.sum()):>4}"
            )


if __name__ == "__main__":
    main()
