"""Complete verification against bounds alone on self-built VNN-COMP instances.

Builds its own competition-style benchmark, then decides every instance
three ways in one run and prints a table:

- **complete**: ``vn.verify`` as it ships (whole-box CROWN, PGD, then
  branch and bound on ReLU splits for the image networks, input splitting
  for the 5-input network), 60 s per instance by default;
- **CROWN alone** and **alpha-CROWN alone**: ``vn.verify(...,
  complete=False)``: one bound pass over the whole box plus the same attack.

The instances: ReLU MLPs with 2 and 4 hidden layers of 256 and a small CNN
(Conv2D 8 4x4/2, ReLU, Conv2D 16 4x4/2, ReLU, Dense 100, ReLU, Dense 10),
trained (standard training) on Fashion-MNIST, exported to ONNX, with
VNN-LIB local-robustness properties (``vn.vnnlib.robustness_property``) of
the first correctly classified test images at several epsilons; and a
5-input network with 6 hidden ReLU layers of 50 (trained on a synthetic
5-class problem) with box properties "the class at the box centre stays on
top over the box" at several box widths. ``instances.csv`` lists them as
VNN-COMP does; each configuration writes its results folder
(``vn.vnnlib.run_instances``).

A verdict is **wrong** if two configurations disagree (sat against unsat),
if a ``sat`` counterexample does not re-check (inside the box, violating the
property, by onnxruntime here), or if an ``unsat`` instance falls to a
stronger attack run here afterwards (PGD, 20 restarts x 200 steps on the
margin, and for the 5-input network 100,000 random points). Wrong must be 0.

Run (needs the Debian package ``dataset-fashion-mnist``):
    KERAS_BACKEND=torch .venv/bin/python benchmarks/complete.py --out /tmp/complete
    ... --timeout 20 --samples 2     # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import csv
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import onnxruntime as ort
import torch

import verinet as vn
from verinet import layers as L

CONFIGS = {
    "complete": {"method": "crown", "complete": True},
    "crown": {"method": "crown", "complete": False},
    "alpha-crown": {"method": "alpha-crown", "complete": False},
}


def mlp(depth: int) -> keras.Model:
    """``depth`` hidden ReLU layers of 256 on a flattened 28x28 image."""
    layers = [L.Input((28, 28, 1)), L.Flatten()]
    for _ in range(depth):
        layers += [L.Dense(256), L.ReLU()]
    return vn.Sequential([*layers, L.Dense(10)])


def small_cnn() -> keras.Model:
    return vn.Sequential(
        [
            L.Input((28, 28, 1)),
            L.Conv2D(8, 4, strides=2, padding="same"),
            L.ReLU(),
            L.Conv2D(16, 4, strides=2, padding="same"),
            L.ReLU(),
            L.Flatten(),
            L.Dense(100),
            L.ReLU(),
            L.Dense(10),
        ]
    )


def box_net() -> keras.Model:
    """5 inputs, 6 hidden ReLU layers of 50, 5 outputs."""
    layers = [L.Input((5,))]
    for _ in range(6):
        layers += [L.Dense(50), L.ReLU()]
    return vn.Sequential([*layers, L.Dense(5)])


def train(model, x, y, epochs, seed):
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    return model


def synthetic_box_data(n, seed):
    """A smooth 5-class problem on ``[-1, 1]^5``: the argmax of a fixed
    random two-layer tanh function."""
    weights = np.random.default_rng(12345)  # the same problem for every seed
    a1 = weights.normal(size=(5, 16)) * 1.5
    a2 = weights.normal(size=(16, 5))
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, 5)).astype(np.float32)
    y = np.argmax(np.tanh(x @ a1) @ a2, axis=1)
    return x, y


def predict(model, x):
    return np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=1)


def build_instances(args, folder):
    """Train the networks, export them, write the properties and
    ``instances.csv``; returns one dict per instance."""
    (x_train, y_train), (x_test, y_test) = vn.datasets.fashion_mnist()
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    rows = []
    nets = {
        "mlp2x256": (lambda: mlp(2), args.mlp_epsilons),
        "mlp4x256": (lambda: mlp(4), args.mlp_epsilons),
        "cnn": (small_cnn, args.cnn_epsilons),
    }
    for name, (build, epsilons) in nets.items():
        start = time.perf_counter()
        keras.utils.set_random_seed(args.seed)  # the same weights every run
        model = train(build(), x_train, y_train, args.epochs, args.seed)
        accuracy = float(np.mean(predict(model, x_test[:1000]) == y_test[:1000]))
        print(
            f"{name}: trained in {time.perf_counter() - start:.0f}s, "
            f"test accuracy {accuracy:.3f}",
            flush=True,
        )
        vn.export_onnx(model, os.path.join(folder, f"{name}.onnx"))
        correct = np.flatnonzero(predict(model, x_test[:200]) == y_test[:200])
        for eps in epsilons:
            for index in correct[: args.samples]:
                prop = f"{name}_i{index}_eps{eps:g}.vnnlib"
                text = vn.vnnlib.robustness_property(
                    x_test[index], int(y_test[index]), eps, 10, (0.0, 1.0)
                )
                with open(os.path.join(folder, prop), "w") as handle:
                    handle.write(text)
                rows.append(
                    {"family": name, "onnx": f"{name}.onnx", "vnnlib": prop, "eps": eps}
                )
    keras.utils.set_random_seed(args.seed)
    model = box_net()
    x, y = synthetic_box_data(20_000, args.seed)
    train(model, x, y, args.box_epochs, args.seed)
    x_val, y_val = synthetic_box_data(2000, args.seed + 1)
    print(
        f"box5x6x50: test accuracy {np.mean(predict(model, x_val) == y_val):.3f}",
        flush=True,
    )
    vn.export_onnx(model, os.path.join(folder, "box5x6x50.onnx"))
    rng = np.random.default_rng(args.seed)
    for width in args.box_widths:
        for k in range(args.box_samples):
            centre = rng.uniform(-0.8, 0.8, size=5).astype(np.float32)
            label = int(predict(model, centre[None])[0])
            prop = f"box_w{width:g}_{k}.vnnlib"
            text = vn.vnnlib.robustness_property(centre, label, width / 2, 5)
            with open(os.path.join(folder, prop), "w") as handle:
                handle.write(text)
            rows.append(
                {
                    "family": "box5x6x50",
                    "onnx": "box5x6x50.onnx",
                    "vnnlib": prop,
                    "eps": width / 2,
                }
            )
    with open(os.path.join(folder, "instances.csv"), "w") as handle:
        for row in rows:
            handle.write(f"{row['onnx']},{row['vnnlib']},{args.timeout:g}\n")
    return rows


def recheck_sat(folder, row, result) -> bool:
    """The counterexample lies in a region's box and violates one of its
    specs on onnxruntime's outputs."""
    prop = vn.vnnlib.read(os.path.join(folder, row["vnnlib"]))
    session = ort.InferenceSession(
        os.path.join(folder, row["onnx"]), providers=["CPUExecutionProvider"]
    )
    x = np.asarray(result.counterexample, dtype=np.float32)
    feed = {session.get_inputs()[0].name: x.reshape(1, *x.shape)}
    y = session.run(None, feed)[0].ravel()
    return any(
        region.contains(x.ravel()) and any(s.violated_by(y) for s in region.specs)
        for region in prop.regions
    )


def strong_attack(folder, row, model_cache, seed) -> bool:
    """Whether a stronger attack than ``verify``'s breaks the property."""
    prop = vn.vnnlib.read(os.path.join(folder, row["vnnlib"]))
    if row["onnx"] not in model_cache:
        path = os.path.join(folder, row["onnx"])
        model_cache[row["onnx"]] = (
            vn.from_onnx(path),
            ort.InferenceSession(path, providers=["CPUExecutionProvider"]),
        )
    model, session = model_cache[row["onnx"]]
    shape = tuple(model.inputs[0].shape[1:])
    generator = torch.Generator().manual_seed(seed)
    for region in prop.regions:
        lo = torch.tensor(region.lower, dtype=torch.float32)
        hi = torch.tensor(region.upper, dtype=torch.float32)
        A = torch.tensor(np.stack([s.A for s in region.specs]), dtype=torch.float32)
        b = torch.tensor(np.stack([s.b for s in region.specs]), dtype=torch.float32)
        restarts, steps = 20, 200
        points = [lo + (hi - lo) * torch.rand((restarts, len(lo)), generator=generator)]
        if len(lo) <= 10:
            points.append(
                lo + (hi - lo) * torch.rand((100_000, len(lo)), generator=generator)
            )
        z = points[0].clone()
        for step in range(steps):
            z.requires_grad_(True)
            y = model(z.reshape(-1, *shape), training=False).reshape(len(z), -1)
            # a spec holds where every row A y <= b: its worst row <= 0
            worst = (torch.einsum("skm,bm->bsk", A, y) - b).max(dim=2).values
            loss = worst.min(dim=1).values.sum()
            (grad,) = torch.autograd.grad(loss, z)
            size = (hi - lo) * 0.5 * (1 - step / steps) + 1e-6
            z = torch.clamp(z.detach() - size * grad.sign(), lo, hi)
            points.append(z.clone())
        for candidates in points:
            candidates = candidates.detach().numpy().astype(np.float32)
            name = session.get_inputs()[0].name
            for chunk in np.array_split(candidates, max(1, len(candidates) // 4096)):
                y = session.run(None, {name: chunk.reshape(-1, *shape)})[0]
                y = y.reshape(len(chunk), -1).astype(np.float64)
                for s in region.specs:
                    hits = np.all(y @ s.A.T <= s.b, axis=1)
                    for k in np.flatnonzero(hits):
                        if region.contains(chunk[k]):
                            return True
    return False


def summarize(rows, family):
    print(f"\n{family}")
    print(
        f"{'configuration':<14}{'sat':>5}{'unsat':>7}{'unknown':>9}{'wrong':>7}"
        f"{'mean s':>9}{'median s':>10}{'max s':>8}"
    )
    for config in CONFIGS:
        part = [r for r in rows if family in ("all", r["family"])]
        status = [r[config] for r in part]
        seconds = np.array([r[f"{config}_seconds"] for r in part])
        wrong = sum(r[f"{config}_wrong"] for r in part)
        print(
            f"{config:<14}{status.count('sat'):>5}{status.count('unsat'):>7}"
            f"{status.count('unknown'):>9}{wrong:>7}{seconds.mean():>9.2f}"
            f"{np.median(seconds):>10.2f}{seconds.max():>8.2f}"
        )
    left = [
        r
        for r in rows
        if family in ("all", r["family"])
        and r["crown"] == "unknown"
        and r["alpha-crown"] == "unknown"
    ]
    settled = sum(r["complete"] != "unknown" for r in left)
    print(
        f"left unknown by CROWN and alpha-CROWN alone: {len(left)}; "
        f"settled by complete: {settled}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="complete-benchmark", help="folder")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--samples", type=int, default=4, help="images per epsilon")
    parser.add_argument(
        "--mlp-epsilons", type=float, nargs="+", default=[0.008, 0.016, 0.024]
    )
    parser.add_argument(
        "--cnn-epsilons", type=float, nargs="+", default=[0.008, 0.016, 0.032]
    )
    parser.add_argument("--box-widths", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--box-samples", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--box-epochs", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    rows = build_instances(args, args.out)
    print(f"{len(rows)} instances, timeout {args.timeout:g}s", flush=True)
    csv_path = os.path.join(args.out, "instances.csv")
    for config, options in CONFIGS.items():
        start = time.perf_counter()
        results = vn.vnnlib.run_instances(
            csv_path, os.path.join(args.out, f"results-{config}"), **options
        )
        for row, result in zip(rows, results, strict=True):
            row[config] = result["result"].status
            row[f"{config}_seconds"] = result["seconds"]
            row[f"{config}_result"] = result["result"]
        print(f"{config}: {time.perf_counter() - start:.0f}s in all", flush=True)
    cache = {}
    for row in rows:
        verdicts = {row[c] for c in CONFIGS}
        conflict = {"sat", "unsat"} <= verdicts
        broken = None
        for config in CONFIGS:
            wrong = conflict and row[config] != "unknown"
            if row[config] == "sat":
                wrong |= not recheck_sat(args.out, row, row[f"{config}_result"])
            if row[config] == "unsat":
                if broken is None:
                    broken = strong_attack(args.out, row, cache, args.seed)
                wrong |= broken
            row[f"{config}_wrong"] = int(wrong)
    with open(os.path.join(args.out, "per-instance.csv"), "w", newline="") as handle:
        fields = ["family", "onnx", "vnnlib", "eps"]
        for config in CONFIGS:
            fields += [config, f"{config}_seconds", f"{config}_wrong"]
        writer = csv.DictWriter(handle, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for family in ("mlp2x256", "mlp4x256", "cnn", "box5x6x50", "all"):
        summarize(rows, family)


if __name__ == "__main__":
    main()
