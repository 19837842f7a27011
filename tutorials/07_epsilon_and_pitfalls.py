# ruff: noqa: B018 - a bare name ending a cell is how a notebook shows it

# %% [markdown]
# # 7. Choosing epsilon and the norm, and the pitfalls
#
# A certificate says "no perturbation of size at most `epsilon`, measured in
# this norm, inside this input range, changes this model's prediction on this
# input". Every part of that sentence can go wrong. This notebook shows how
# to choose the radius and the norm, and five pitfalls:
#
# 1. certifying a model other than the one you deploy;
# 2. the wrong norm;
# 3. mistaking an attack for a proof;
# 4. forgetting the input range;
# 5. not recording what was certified.
#
# **Fast mode.** With `VERINET_TUTORIAL_FAST=1` (what the tests set) the
# notebook trains briefly on a few hundred images with short time limits, to
# check it runs; its numbers then mean nothing. Files are written to the
# current directory.

# %%
# %matplotlib inline
import json
import os
import platform

import verinet as vn  # import verinet before keras: it selects the torch backend
from verinet import layers
from verinet.onnx import read_metadata

# isort: split
import keras
import numpy as np
import torch
from matplotlib.figure import Figure

FAST = os.environ.get("VERINET_TUTORIAL_FAST") == "1"
EPOCHS = 5 if FAST else 25
EPSILONS = [0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1]
EPSILON = 0.05
SEED = 0

(x_train, y_train), (x_test, y_test) = vn.datasets.digits()
if FAST:
    x_train, y_train = x_train[:500], y_train[:500]
    x_test, y_test = x_test[:60], y_test[:60]


def build():
    return vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(64, kernel_initializer="ibp"),
            layers.ReLU(),
            layers.Dense(64, kernel_initializer="ibp"),
            layers.ReLU(),
            layers.Dense(10, kernel_initializer="ibp"),
        ]
    )


models = {}
for name, robust in (("standard", "standard"), ("crown-ibp", "crown-ibp")):
    keras.utils.set_random_seed(SEED)
    models[name] = build()
    models[name].compile(
        keras.optimizers.Adam(1e-3),
        robust=robust,
        epsilon=EPSILON if robust != "standard" else 0.0,
        input_range=(0.0, 1.0),
    )
    models[name].fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
robust_model = models["crown-ibp"]

# %% [markdown]
# ## Choosing epsilon
#
# Epsilon is in input units. These pixels are in [0, 1] and the digits data
# has only 17 grey levels (steps of 1/16 = 0.0625), so an L-infinity epsilon
# of 0.05 moves every pixel by less than one grey level, all at once. Look at
# what a radius means on your data before choosing it: below, one image and
# the worst-looking point of each ball (every pixel pushed by `+-epsilon` in a
# random direction, clipped to [0, 1]).

# %%
rng = np.random.default_rng(SEED)
signs = rng.choice([-1.0, 1.0], size=x_test[0].shape)
fig = Figure(figsize=(10, 2.4))
radii = [0.0, 0.05, 0.1, 0.2, 0.3]
for ax, eps in zip(fig.subplots(1, len(radii)), radii, strict=True):
    ax.imshow(
        np.clip(x_test[0] + eps * signs, 0, 1)[..., 0], cmap="gray", vmin=0, vmax=1
    )
    ax.set_title(f"epsilon = {eps}")
    ax.axis("off")
fig

# %% [markdown]
# Then measure: `vn.robustness_curve(model, x, y, epsilons)` certifies at each
# radius and returns verified accuracy (proven: a lower bound on robust
# accuracy) and attack accuracy (not broken: an upper bound). The true robust
# accuracy lies in the shaded band. The robust model was trained at
# `EPSILON`; look at how fast each curve falls past it.

# %%
curves = {
    name: vn.robustness_curve(
        model, x_test, y_test, EPSILONS, input_range=(0.0, 1.0), verbose=0
    )
    for name, model in models.items()
}
fig = Figure(figsize=(11, 4))
for ax, (name, curve) in zip(fig.subplots(1, 2), curves.items(), strict=True):
    vn.plot.robustness_curve(curve, ax=ax)
    ax.axvline(EPSILON, color="grey", linestyle=":")
    ax.set_title(name)
fig

# %% [markdown]
# ### Each sample's certified radius
#
# `certify(..., radius=True)` also finds, per sample, the largest radius the
# bounds prove (by bisection, up to `radius_max`, default `4 * epsilon`):
# `report.certified_radius` (0 where nothing was proven). The share of
# correctly classified samples with a radius of at least `r` is the verified
# accuracy at `r`, as a continuous curve from one call.

# %%
radius_report = robust_model.certify(
    x_test, y_test, EPSILON, input_range=(0.0, 1.0), radius=True, verbose=0
)
radius = radius_report.certified_radius
print(f"median certified radius {np.median(radius):.4f}, largest {radius.max():.4f}")
grid = np.linspace(0, radius_report.extra["radius_max"], 200)
fig = Figure(figsize=(6.5, 4))
ax = fig.subplots()
correct = radius_report.predictions == radius_report.labels
ax.plot(
    grid,
    [np.mean(correct & (radius >= r)) for r in grid],
    label="correct, with certified radius >= r",
)
ax.plot(
    curves["crown-ibp"]["epsilons"],
    curves["crown-ibp"]["verified_accuracy"],
    "o",
    label="robustness_curve (verified)",
)
ax.set_xlabel("L-infinity radius r")
ax.set_ylabel("share of test images")
ax.legend(fontsize="small")
ax.grid(alpha=0.3)
fig

# %% [markdown]
# ## Pitfall 1: certify the model you deploy
#
# A report records the SHA-256 of the weights it was computed on, and export
# refuses a report that belongs to other weights. Here we train the
# certified model one more epoch (as happens when someone "just fine-tunes
# it") and try to ship it with the old certificate:

# %%
report = robust_model.certify(
    x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0
)
robust_model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
try:
    vn.export_onnx(robust_model, "pitfall.onnx", report=report)
except vn.InvalidInputError as error:
    print("refused:", str(error)[:200], "...")

report = robust_model.certify(
    x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0
)
vn.export_onnx(robust_model, "pitfall.onnx", report=report)
shipped = vn.certify_onnx(
    "pitfall.onnx", x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0
)
print(
    f"re-certified: verified {report.verified_accuracy:.3f}; the ONNX file: "
    f"{shipped.verified_accuracy:.3f}"
)

# %% [markdown]
# ## Pitfall 2: the right norm
#
# "Robust at 0.05" means nothing without the norm. The L-infinity ball lets
# *every* pixel move by epsilon; the L2 ball of the same radius bounds the
# *total* change (the square root of the sum of squares), so it is much
# smaller: an L2 radius `r` contains an L-infinity radius `r / sqrt(64)`, and
# an L-infinity radius `r` sits inside the L2 radius `r * sqrt(64)`. Certify
# in the threat model you care about, and quote the norm with the number.

# %%
d = int(np.prod(x_test.shape[1:]))
for norm, eps in (
    ("linf", EPSILON),
    ("l2", EPSILON),
    ("l2", EPSILON * np.sqrt(d)),
):
    r = robust_model.certify(
        x_test, y_test, eps, norm=norm, input_range=(0.0, 1.0), verbose=0
    )
    print(f"{norm:4s} radius {eps:.3f}: verified {r.verified_accuracy:.3f}")

# %% [markdown]
# ## Pitfall 3: attacks are not proofs
#
# An attack that fails to break an input is evidence, not proof: a stronger
# attack may succeed. Attack accuracy is therefore only an *upper* bound on
# the true robust accuracy, and how high it is depends on the attack. We
# certify the standard model (the one most exposed) with a one-step attack
# (FGSM) and with certify's default, PGD, which takes many steps from several
# starts.

# %%
standard = models["standard"]
by_attack = {
    attack: standard.certify(
        x_test, y_test, EPSILON, attack=attack, input_range=(0.0, 1.0), verbose=0
    )
    for attack in ("fgsm", "pgd")
}
for attack, r in by_attack.items():
    print(
        f"{attack:5s} attack accuracy {r.attack_accuracy:.3f}, "
        f"verified {r.verified_accuracy:.3f}, unknown {int(r.unknown.sum())}"
    )
missed = by_attack["pgd"].falsified & ~by_attack["fgsm"].falsified
print(f"{int(missed.sum())} images FGSM left standing were broken by PGD")

# %% [markdown]
# The samples PGD leaves **unknown** are exactly the case to worry about: the
# attack could not break them, and the bounds could not prove them. For one
# of them, the smallest margin lower bound is negative (no proof) although no
# adversarial example was found:

# %%
pgd = by_attack["pgd"]
unknown = np.flatnonzero(pgd.unknown)
if len(unknown):
    i = int(unknown[0])
    margins = np.delete(pgd.margin_lower[i], pgd.labels[i])
    print(
        f"test image {i}: label {pgd.labels[i]}, predicted {pgd.predictions[i]}, "
        f"smallest margin lower bound {margins.min():+.4f}, attack: nothing found"
    )

# %% [markdown]
# Complete verification (`method="auto"`, tutorial 6) decides the unknown
# samples exactly (time permitting). Only then do we know the true robust
# accuracy; any unknown sample it *falsifies* is one the attack wrongly left
# standing.

# %%
exact = standard.certify(
    x_test,
    y_test,
    EPSILON,
    method="auto",
    input_range=(0.0, 1.0),
    timeout=1 if FAST else 10,
    time_budget=3 if FAST else 120,
    verbose=0,
)
settled = np.asarray(exact.extra["settled_by"], dtype=object)
complete_stage = np.isin(settled, ["milp", "bab"])
print(exact.summary())
print(
    f"the exact stage settled {int(complete_stage.sum())} samples: "
    f"{int((complete_stage & exact.verified).sum())} robust, "
    f"{int((complete_stage & exact.falsified).sum())} broken"
)

# %% [markdown]
# The ordering to remember: verified accuracy <= true robust accuracy <=
# attack accuracy, and the weaker the attack, the higher (more flattering)
# the last one. When complete verification leaves nothing unknown, its two
# bars meet at the true value.

# %%
bars = {
    "verified\n(CROWN)": pgd.verified_accuracy,
    "verified\n(complete)": exact.verified_accuracy,
    "not broken\n(complete)": exact.attack_accuracy,
    "not broken\n(PGD)": by_attack["pgd"].attack_accuracy,
    "not broken\n(FGSM)": by_attack["fgsm"].attack_accuracy,
}
fig = Figure(figsize=(8, 3.8))
ax = fig.subplots()
colors = ["tab:green", "tab:green", "tab:olive", "tab:orange", "tab:red"]
drawn = ax.bar(list(bars), list(bars.values()), color=colors)
ax.bar_label(drawn, fmt="%.3f", fontsize="small")
ax.set_ylabel(f"share of test images (L-inf eps={EPSILON})")
ax.set_title("Standard model: lower bounds (left) and upper bounds (right)")
ax.set_ylim(0, 1.05)
fig

# %% [markdown]
# ## Pitfall 4: the input range
#
# Without `input_range`, the ball around a black pixel (0.0) includes
# negative intensities that no image can have. Bounds then have to cover
# inputs that never occur (fewer proofs), and the attack may "break" a
# sample with an impossible image. Give the range to `compile`, `certify`
# and every other call, as the valid box of your data (after any
# preprocessing the model does not include).

# %%
for name, kwargs in (
    ("input_range=(0, 1)", {"input_range": (0.0, 1.0)}),
    ("no input_range", {}),
):
    r = robust_model.certify(x_test, y_test, EPSILON, verbose=0, **kwargs)
    outside = 0
    if r.falsified.any():
        found = r.adversarial_examples[r.falsified]
        outside = int(np.sum(np.any((found < 0) | (found > 1), axis=(1, 2, 3))))
    print(
        f"{name:20s} verified {r.verified_accuracy:.3f}, attack {r.attack_accuracy:.3f}"
        f", counterexamples outside [0, 1]: {outside}"
    )

# %% [markdown]
# ## Pitfall 5: document everything
#
# A verified-accuracy number is only meaningful with its settings.
# `report.save("certificate.json")` writes the summary, the settings
# (epsilon, norm, input range, method, attack, dtype), the SHA-256 of the
# weights and of the report's own content, and a `.npz` beside it with every
# per-sample verdict, margin bound and counterexample. `load` checks that the
# two files belong together. Keep it with the model, along with what the
# report cannot know: the data, the seed and the software versions.

# %%
report.save("certificate.json")
loaded = vn.CertificationReport.load("certificate.json")
print("loaded report matches:", loaded.content_sha256() == report.content_sha256())
with open("certificate.json") as handle:
    saved = json.load(handle)
keys = ["format", "epsilon", "norm", "input_range", "method", "attack", "dtype"]
keys += ["weights_sha256", "report_sha256", "arrays"]
print(json.dumps({key: saved[key] for key in keys}, indent=1))
print("files:", sorted(name for name in os.listdir() if name.startswith("certif")))

card = {
    "report": "certificate.json",
    "report_sha256": report.content_sha256(),
    "weights_sha256": report.weights_sha256,
    "onnx_file": "pitfall.onnx",
    "onnx_weights_sha256": read_metadata("pitfall.onnx")["verinet.weights_sha256"],
    "data": f"vn.datasets.digits() test split, {len(x_test)} images",
    "threat_model": f"{report.norm} epsilon={report.epsilon} "
    f"input_range={report.input_range}",
    "seed": SEED,
    "versions": {
        "verinet": vn.__version__,
        "keras": keras.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    },
}
with open("model_card.json", "w") as handle:
    json.dump(card, handle, indent=1)
print(json.dumps(card, indent=1))

# %% [markdown]
# ## Takeaways
#
# - Choose epsilon from what a perturbation means on your data, then look at
#   the whole robustness curve, not one point.
# - Certify the deployed artifact (`certify_onnx`); hashes tie reports to
#   weights.
# - Always state the norm; L2 and L-infinity radii are not comparable without
#   a factor `sqrt(d)`.
# - Attack accuracy is an upper bound; only verified accuracy is a guarantee.
# - Pass `input_range`; save the report and record the rest.
