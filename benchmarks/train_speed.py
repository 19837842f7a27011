"""Cost of robust training: ms per step and peak memory per objective.

One model (the Fashion-MNIST-shaped CNN: 28x28x1 -> Conv2D 16 4x4/2 'same' ->
ReLU -> Conv2D 32 4x4/2 'same' -> ReLU -> Flatten -> Dense 100 -> ReLU ->
Dense 10), batch 128, random data, trained with ``compile(robust=...)`` and
plain ``fit`` for each objective; plus the same architecture as a plain Keras
model trained with Keras's own ``fit``. Every row runs in a fresh process
(multiprocessing 'spawn') so its peak resident memory is its own; all rows run
in one invocation, so the ratios compare like with like.

Targets: IBP <= 3x standard, CROWN-IBP <= 5x standard, verinet standard <=
1.05x plain Keras.

Run from the repository root::

    KERAS_BACKEND=torch .venv/bin/python benchmarks/train_speed.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/train_speed.py --steps 40
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("KERAS_BACKEND", "torch")

ROWS = ["keras", "standard", "pgd", "trades", "ibp", "crown", "smoothing"]


def _build(kind):
    import keras

    import verinet as vn
    from verinet import layers

    if kind == "keras":
        L, Model = keras.layers, keras.Sequential
    else:
        L, Model = layers, vn.Sequential
    return Model(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(16, 4, strides=2, padding="same"),
            L.ReLU(),
            L.Conv2D(32, 4, strides=2, padding="same"),
            L.ReLU(),
            L.Flatten(),
            L.Dense(100),
            L.ReLU(),
            L.Dense(10),
        ]
    )


def measure(row, steps, batch, repeats, threads):
    """Median ms per training step over ``repeats`` epochs of ``steps`` steps."""
    import keras
    import numpy as np
    import torch

    import verinet as vn

    if threads:
        torch.set_num_threads(threads)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (steps * batch, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, steps * batch)
    model = _build(row)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if row == "keras":
        model.compile(keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    else:
        from verinet.schedules import Constant

        model.compile(
            keras.optimizers.Adam(1e-3),
            loss=loss,
            metrics=["accuracy"],
            # CROWN-IBP at beta=1, its most expensive setting (the default beta
            # falls to 0, plain IBP, as epsilon reaches its target).
            robust=vn.objectives.CROWNIBP(beta=1.0) if row == "crown" else row,
            epsilon=Constant(0.1),
            input_range=(0, 1),
        )
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        times.append((time.perf_counter() - start) / steps * 1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda = (
        torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    )
    return statistics.median(times), peak, cuda


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    args = parser.parse_args(argv)
    print(
        f"CNN 28x28, batch {args.batch}, {args.steps} steps x {args.repeats} repeats, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results = {}
    context = multiprocessing.get_context("spawn")
    for row in args.rows:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            results[row] = pool.submit(
                measure, row, args.steps, args.batch, args.repeats, args.threads
            ).result()
        ms, rss, _ = results[row]
        print(f"  {row:<10} {ms:8.1f} ms/step  peak RSS {rss:7.0f} MiB", flush=True)
    base = results.get("standard")
    print("\n| objective | ms/step | vs standard | peak RSS MiB | peak CUDA MiB |")
    print("|---|---|---|---|---|")
    for row, (ms, rss, cuda) in results.items():
        ratio = f"{ms / base[0]:.2f}x" if base else "-"
        cuda_text = "-" if cuda is None else f"{cuda:.0f}"
        print(f"| {row} | {ms:.1f} | {ratio} | {rss:.0f} | {cuda_text} |")
    if base and "keras" in results:
        print(
            f"\nverinet standard fit vs plain Keras fit: "
            f"{base[0] / results['keras'][0]:.3f}x"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
