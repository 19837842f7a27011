"""Strength and cost of ``certify``'s default attack, old against new.

Trains the README's model (digits MLP: Flatten, Dense 256 ``ibp`` init,
ReLU, Dense 10; ``compile("adam", robust="ibp", epsilon=0.05,
input_range=(0, 1))``; 30 epochs, ``validation_split=0.1``,
``keras.utils.set_random_seed(seed)``), bounds the test split (360 images)
with CROWN, then attacks the same samples with

* ``old``: certify's former default, ``PGD(steps=30, restarts=2)``
  (untargeted margin loss, random starts);
* ``new``: certify's default now, ``TargetedPGD()`` (3 targets ranked by a
  first-order estimate, starts at the gradient vertex and a random vertex,
  10 cosine-decayed steps, early exit);

and, on the samples CROWN leaves open, a much stronger ``reference``:
``TargetedPGD(targets=None, restarts=10, steps=100)`` (every wrong class, 10
starts, 10x the steps) together with an untargeted ``PGD(steps=200,
restarts=10)``. With ``--milp EPS ...`` it also solves, with scipy's HiGHS MILP, the
exact largest margin ``max_t f_t - f_y`` over the L∞ ball of every sample
that is still unknown after all attacks (one hidden ReLU layer only): a
sample with a negative exact margin is truly robust, so no attack can break
it.

Per epsilon it prints the verdict counts as ``certify`` would give them
(falsified = misclassified or broken by the attack), how many "unknown"
samples each attack leaves that the reference breaks, and the attack times
against CROWN's bound time. Both attacks run, like in ``certify``, on every
sample (verified ones too, as the soundness check) in batches of 256; the
``open only`` column times the new attack on the samples CROWN did not
verify. Times are medians of ``--repeats`` interleaved repetitions (CROWN,
old, new, new on open samples) in one run.

Run from the repository root (about two minutes on one core)::

    KERAS_BACKEND=torch .venv/bin/python benchmarks/attack_strength.py
    KERAS_BACKEND=torch .venv/bin/python benchmarks/attack_strength.py \\
        --epsilons 0.05 0.07 0.1 --milp 0.05 0.07
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import torch
from keras import ops

import verinet as vn
from verinet import layers
from verinet.attacks import PGD, TargetedPGD
from verinet.attacks.pgd import _margin_loss

INPUT_RANGE = (0.0, 1.0)
BATCH = 256


def train(seed: int, epochs: int):
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
    model = vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(256, kernel_initializer="ibp"),
            layers.ReLU(),
            layers.Dense(10, kernel_initializer="ibp"),
        ]
    )
    model.compile("adam", robust="ibp", epsilon=0.05, input_range=INPUT_RANGE)
    model.fit(x_train, y_train, epochs=epochs, validation_split=0.1, verbose=0)
    return model, x_test.astype(np.float32), y_test


def margins(model, x, y):
    """``max_{j != y} f_j - f_y`` per sample (positive: misclassified)."""
    with torch.no_grad():
        logits = model(ops.convert_to_tensor(x), training=False)
        labels = ops.convert_to_tensor(np.asarray(y), dtype="int64")
        return ops.convert_to_numpy(_margin_loss(logits, labels))


def in_set(x_adv, x, epsilon):
    delta = np.abs(x_adv.astype(np.float64) - x).reshape(len(x), -1).max(axis=1)
    flat = x_adv.reshape(len(x), -1)
    return (
        (delta <= epsilon * (1 + 1e-6))
        & (flat.min(axis=1) >= INPUT_RANGE[0])
        & (flat.max(axis=1) <= INPUT_RANGE[1])
    )


def attack_all(make, x, y):
    """Run ``make()``'s attack in certify's batches; ``(examples, seconds)``."""
    start = time.perf_counter()
    out = [
        make().perturb(x[i : i + BATCH], y[i : i + BATCH])
        for i in range(0, len(x), BATCH)
    ]
    return np.concatenate(out), time.perf_counter() - start


def crown(model, x, y, epsilon):
    start = time.perf_counter()
    low = vn.margin_bounds(
        model, x, y, epsilon, method="crown", input_range=INPUT_RANGE, batch_size=BATCH
    )
    return np.all(low > 0, axis=1), time.perf_counter() - start


def exact_max_margin(model, x, label, epsilon):
    """Exact ``max_{t != label} f_t - f_label`` over the L∞ ball (MILP)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    (w1, b1), (w2, b2) = (
        [np.asarray(v, np.float64) for v in layer.get_weights()]
        for layer in model.layers
        if layer.get_weights()
    )
    x = np.asarray(x, np.float64).ravel()
    lo = np.clip(x - epsilon, *INPUT_RANGE)
    hi = np.clip(x + epsilon, *INPUT_RANGE)
    pos, neg = np.maximum(w1, 0), np.minimum(w1, 0)
    low = lo @ pos + hi @ neg + b1  # pre-activation bounds (exact per neuron)
    up = hi @ pos + lo @ neg + b1
    n, h = w1.shape
    # Variables: inputs (n), ReLU outputs z (h), ReLU phases d (h, binary).
    rows, row_lo, row_hi = [], [], []
    integral = np.zeros(n + 2 * h)
    var_lo = np.concatenate([lo, np.zeros(2 * h)])
    var_hi = np.concatenate([hi, np.maximum(up, 0), np.ones(h)])
    for j in range(h):
        if up[j] <= 0:  # always off
            var_hi[n + j] = var_hi[n + h + j] = 0
            continue
        r = np.zeros(n + 2 * h)
        r[:n], r[n + j] = w1[:, j], -1.0
        if low[j] >= 0:  # always on: z = w x + b
            rows.append(r)
            row_lo.append(-b1[j])
            row_hi.append(-b1[j])
            continue
        integral[n + h + j] = 1
        rows.append(r)  # z >= w x + b
        row_lo.append(-np.inf)
        row_hi.append(-b1[j])
        r2 = -r.copy()
        r2[n + h + j] = -low[j]  # z <= w x + b - low (1 - d)
        rows.append(r2)
        row_lo.append(-np.inf)
        row_hi.append(b1[j] - low[j])
        r3 = np.zeros(n + 2 * h)
        r3[n + j], r3[n + h + j] = 1.0, -up[j]  # z <= up d
        rows.append(r3)
        row_lo.append(-np.inf)
        row_hi.append(0.0)
    constraints = LinearConstraint(np.array(rows), row_lo, row_hi)
    best = -np.inf
    for t in range(w2.shape[1]):
        if t == label:
            continue
        c = np.zeros(n + 2 * h)
        c[n : n + h] = -(w2[:, t] - w2[:, label])
        res = milp(
            c,
            constraints=constraints,
            integrality=integral,
            bounds=Bounds(var_lo, var_hi),
        )
        if res.status != 0:
            return float("nan")
        best = max(best, -res.fun + b2[t] - b2[label])
    return best


def evaluate(model, x, y, correct, eps, repeats, milp):
    verified = crown(model, x, y, eps)[0] & correct  # warm-up and verdicts
    open_ = correct & ~verified
    attacks = {
        "old": lambda: PGD(model, eps, steps=30, restarts=2, input_range=INPUT_RANGE),
        "new": lambda: TargetedPGD(model, eps, input_range=INPUT_RANGE),
    }
    times = {"crown": [], "old": [], "new": [], "open": []}
    examples = {}
    for _ in range(repeats):
        times["crown"].append(crown(model, x, y, eps)[1])
        for name, make in attacks.items():
            examples[name], seconds = attack_all(make, x, y)
            times[name].append(seconds)
        times["open"].append(attack_all(attacks["new"], x[open_], y[open_])[1])
    med = {k: statistics.median(v) for k, v in times.items()}

    broken = {}
    for name, x_adv in examples.items():
        assert in_set(x_adv, x, eps).all(), name
        broken[name] = margins(model, x_adv, y) > 0
        assert not np.any(broken[name] & verified), "soundness: attack beat CROWN"

    idx = np.flatnonzero(open_)
    references = [
        TargetedPGD(
            model,
            eps,
            targets=None,
            restarts=10,
            steps=100,
            input_range=INPUT_RANGE,
            seed=1,
        ),
        PGD(model, eps, steps=200, restarts=10, input_range=INPUT_RANGE, seed=1),
    ]
    ref = np.zeros(len(x), dtype=bool)
    start = time.perf_counter()
    for attack in references:
        x_ref = attack.perturb(x[idx], y[idx])
        assert in_set(x_ref, x[idx], eps).all()
        ref[idx] |= margins(model, x_ref, y[idx]) > 0
    t_ref = time.perf_counter() - start

    print(
        f"\nepsilon {eps}: CROWN verifies {verified.sum()}, leaves "
        f"{open_.sum()} correct samples open; the reference attack "
        f"({t_ref:.1f} s) breaks {ref.sum()} of them. "
        f"CROWN bound time {med['crown']:.3f} s."
    )
    head = ("attack", "falsified", "unknown", "unknown ref breaks", "attack s")
    print("  " + " | ".join(head) + " | vs CROWN")
    for name in ("old", "new"):
        falsified = ~correct | broken[name]
        unknown = open_ & ~broken[name]
        cells = (
            name,
            falsified.sum(),
            unknown.sum(),
            np.sum(unknown & ref),
            f"{med[name]:.3f}",
        )
        widths = [len(h) for h in head]
        row = " | ".join(f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True))
        print(f"  {row} | {med[name] / med['crown']:.2f}x")
    missed = np.sum((broken["old"] | broken["new"]) & open_ & ~ref)
    print(
        f"  new/old attack time {med['new'] / med['old']:.2f}; new attack on the "
        f"{open_.sum()} open samples only {med['open']:.3f} s "
        f"({med['open'] / med['crown']:.2f}x CROWN); "
        f"broken by old or new but not by the reference: {missed}"
    )
    if milp:
        left = np.flatnonzero(open_ & ~(broken["old"] | broken["new"] | ref))
        start = time.perf_counter()
        exact = np.array([exact_max_margin(model, x[i], y[i], eps) for i in left])
        largest = np.nanmax(exact) if len(left) else float("nan")
        print(
            f"  MILP ({time.perf_counter() - start:.0f} s) on the {len(left)} "
            f"samples no attack broke: {np.sum(exact < 0)} robust (largest exact "
            f"margin {largest:.4f}), {np.sum(exact >= 0)} breakable, "
            f"{np.sum(np.isnan(exact))} unsolved"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.05])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--milp",
        type=float,
        nargs="*",
        default=[],
        help="epsilons whose leftover unknown samples MILP decides",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, keras {keras.__version__}, threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    start = time.perf_counter()
    model, x, y = train(args.seed, args.epochs)
    seconds = time.perf_counter() - start
    print(f"trained the README model (seed {args.seed}) in {seconds:.1f} s")
    correct = margins(model, x, y) < 0
    print(f"{len(x)} test samples, clean accuracy {correct.mean():.4f}")
    for eps in args.epsilons:
        milp = any(abs(eps - e) < 1e-12 for e in args.milp)
        evaluate(model, x, y, correct, eps, args.repeats, milp)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
