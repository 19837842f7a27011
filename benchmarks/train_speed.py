"""Cost of robust training: ms per step and peak memory per objective.

One model (the Fashion-MNIST-shaped CNN: 28x28x1 -> Conv2D 16 4x4/2 'same' ->
ReLU -> Conv2D 32 4x4/2 'same' -> ReLU -> Flatten -> Dense 100 -> ReLU ->
Dense 10), batch 128, random data, trained with ``compile(robust=...)`` and
plain ``fit`` for each objective; plus the same architecture as a plain Keras
model trained with Keras's own ``fit``. Every row runs in its own process
(multiprocessing 'spawn') so its peak memory is its own; the rows take turns,
one epoch each per round, and each ratio is the median over rounds of the
ratio within a round, so drifts in machine load cancel out.

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


def _setup(row, steps, batch, threads):
    """Build and compile ``row``'s model; return a function timing one epoch."""
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

    def epoch():
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        return (time.perf_counter() - start) / steps * 1000

    return epoch


def _worker(conn, row, steps, batch, threads):
    """Serve timed epochs of ``row`` until told to stop; then report memory."""
    import torch

    epoch = _setup(row, steps, batch, threads)
    conn.send("ready")
    while conn.recv() == "epoch":
        conn.send(epoch())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda = (
        torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    )
    conn.send((peak, cuda))


def measure(rows, steps, batch, repeats, threads):
    """Interleaved timing: each round times one epoch of every row in turn.

    Every row lives in its own process (so its peak memory is its own), and
    only one runs at a time. Ratios are taken within a round and their median
    is reported, so slow drifts in machine load cancel out.

    Returns:
        ``{row: (ms_per_step_per_round, peak_rss_mib, peak_cuda_mib)}``.
    """
    context = multiprocessing.get_context("spawn")
    links = {}
    for row in rows:
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker, args=(child, row, steps, batch, threads), daemon=True
        )
        process.start()
        links[row] = (parent, process)
    for parent, _ in links.values():
        if parent.recv() != "ready":
            raise RuntimeError("a benchmark worker failed to start")
    times = {row: [] for row in rows}
    for round_ in range(repeats):
        order = rows[round_ % len(rows) :] + rows[: round_ % len(rows)]
        for row in order:
            links[row][0].send("epoch")
            times[row].append(links[row][0].recv())
    results = {}
    for row, (parent, process) in links.items():
        parent.send("stop")
        peak, cuda = parent.recv()
        process.join()
        results[row] = (times[row], peak, cuda)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    args = parser.parse_args(argv)
    rows = list(dict.fromkeys(["standard", *args.rows]))
    print(
        f"CNN 28x28, batch {args.batch}, {args.steps} steps x {args.repeats} "
        f"interleaved rounds, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = measure(rows, args.steps, args.batch, args.repeats, args.threads)
    base = results["standard"][0]

    def ratio(times, against):
        return statistics.median(t / b for t, b in zip(times, against, strict=True))

    print(
        "\n| objective | ms/step (median) | vs standard (median of rounds) "
        "| peak RSS MiB | peak CUDA MiB |"
    )
    print("|---|---|---|---|---|")
    for row, (times, rss, cuda) in results.items():
        cuda_text = "-" if cuda is None else f"{cuda:.0f}"
        print(
            f"| {row} | {statistics.median(times):.1f} | {ratio(times, base):.2f}x "
            f"| {rss:.0f} | {cuda_text} |"
        )
    if "keras" in results:
        print(
            "\nverinet standard fit vs plain Keras fit (median of rounds): "
            f"{ratio(base, results['keras'][0]):.3f}x"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
