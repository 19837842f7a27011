# ruff: noqa: B018 - a bare name ending a cell is how a notebook shows it

# %% [markdown]
# # 6. Deploying: ONNX, certifying the file, VNN-LIB, complete verification
#
# A certificate is about one exact function. The model you ship must be that
# function, so this notebook:
#
# 1. exports the deployed model to ONNX with its certificate in the metadata
#    (`vn.export_onnx`);
# 2. certifies the **file** itself (`vn.certify_onnx`);
# 3. writes and decides VNN-LIB properties, the standard format of the
#    verification competition (VNN-COMP): `vn.vnnlib.robustness_property`,
#    `vn.verify`;
# 4. settles the samples bounds leave unknown with complete verification
#    (`certify(method="auto")`).
#
# **Fast mode.** With `VERINET_TUTORIAL_FAST=1` (what the tests set) the
# notebook trains briefly on a few hundred images with short time limits, to
# check it runs; its numbers then mean nothing. Files are written to the
# current directory.

# %%
# %matplotlib inline
import collections
import os
import pathlib

import verinet as vn  # import verinet before keras: it selects the torch backend
from verinet import layers
from verinet.onnx import read_metadata

# isort: split
import keras
import numpy as np
from matplotlib.figure import Figure

FAST = os.environ.get("VERINET_TUTORIAL_FAST") == "1"
EPOCHS = 5 if FAST else 25
TIME_BUDGET = 3 if FAST else 120  # seconds for complete verification
EPSILON = 0.05
keras.utils.set_random_seed(0)

(x_train, y_train), (x_test, y_test) = vn.datasets.digits()
if FAST:
    x_train, y_train = x_train[:500], y_train[:500]
    x_test, y_test = x_test[:60], y_test[:60]

# %% [markdown]
# ## A robust model with batch norm
#
# Small on purpose: complete verification (below) solves an exact problem per
# sample, and its cost grows quickly with the number of ReLUs.

# %%
model = vn.Sequential(
    [
        layers.Input((8, 8, 1)),
        layers.Flatten(),
        layers.Dense(64),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Dense(64),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Dense(10),
    ]
)
model.compile(
    keras.optimizers.Adam(1e-3),
    robust="crown-ibp",
    epsilon=EPSILON,
    input_range=(0.0, 1.0),
)
model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
report = model.certify(x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0)
print(report.summary())

# %% [markdown]
# ## Export to ONNX with the certificate
#
# `vn.export_onnx(model, path, report=report)` deploys the model first
# (`vn.deploy`: batch norm folded, dropout removed), checks that onnxruntime
# reproduces the Keras outputs, and only then writes the file. The metadata
# records the certificate (epsilon, norm, method, verified accuracy, ...) and
# a SHA-256 of the weights. The report must belong to these weights: a report
# of another model (or of this model before more training) is refused.

# %%
ONNX_FILE = "digits_robust.onnx"
metadata = vn.export_onnx(model, ONNX_FILE, report=report)
for key in (
    "verinet.epsilon",
    "verinet.norm",
    "verinet.method",
    "verinet.verified_accuracy",
    "verinet.weights_sha256",
):
    print(f"{key:28s} {metadata[key]}")

# %% [markdown]
# Anyone holding the file can read the certificate back and check that the
# weights are still the ones it was issued for:

# %%
stored = read_metadata(ONNX_FILE)
print("weights match the certificate:", stored["weights_sha256_ok"])
print("file size:", os.path.getsize(ONNX_FILE), "bytes")

# %% [markdown]
# ## Certify the file itself
#
# `vn.certify_onnx(path, x, y, epsilon, ...)` imports the ONNX graph as a
# bound-aware model (`vn.from_onnx`, checked against onnxruntime) and
# certifies it. This is what you ship, so this is the certificate that
# counts; it should agree with the Keras model's.

# %%
onnx_report = vn.certify_onnx(
    ONNX_FILE, x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0
)
print(onnx_report.summary())
print(
    "same verdicts as the Keras model:",
    np.array_equal(onnx_report.verified, report.verified)
    and np.array_equal(onnx_report.falsified, report.falsified),
)

# %% [markdown]
# ## VNN-LIB properties and `vn.verify`
#
# VNN-LIB states a property as an input box and a condition on the outputs
# that would be a *counterexample*. `vn.vnnlib.robustness_property(x, label,
# epsilon, num_classes, input_range)` writes local robustness: the box is
# the L-infinity ball around `x` clipped to the input range, and a
# counterexample is any input in it where another class scores at least as
# high as `label`.
#
# `vn.verify(onnx_file, vnnlib_file)` answers like a VNN-COMP tool:
#
# - `"unsat"`: no counterexample exists; the property is **proven**;
# - `"sat"`: a counterexample exists, and onnxruntime confirmed it
#   (`result.counterexample`);
# - `"unknown"`: undecided within the timeout.
#
# By default it does not stop at one bound pass: it splits the input box or
# branches on ReLUs until it decides or times out (`complete=False` stops
# after the bounds and the attack). We take one test image of each verdict.

# %%
chosen = {}
for verdict in ("verified", "falsified", "unknown"):
    indices = np.flatnonzero(getattr(report, verdict))
    if verdict == "falsified":  # prefer one the attack broke over a misclassified
        correct = report.predictions[indices] == report.labels[indices]
        indices = np.concatenate([indices[correct], indices[~correct]])
    if len(indices):
        chosen[verdict] = int(indices[0])

for verdict, i in chosen.items():
    text = vn.vnnlib.robustness_property(
        x_test[i], int(y_test[i]), EPSILON, 10, input_range=(0.0, 1.0)
    )
    path = pathlib.Path(f"digit_{i}.vnnlib")
    path.write_text(text)
    result = vn.verify(ONNX_FILE, path, timeout=2 if FAST else 30)
    print(
        f"image {i:3d} (certify said {verdict:9s}): {result} "
        f"in {result.seconds:.2f} s  {result.detail}"
    )

# %% [markdown]
# The last property file, shortened: the input box (two of its 64 variables)
# and the output condition that would make an input a counterexample.

# %%
lines = [line for line in text.splitlines() if line and "declare" not in line]
box = [line for line in lines[2:] if "X_" in line]
condition = [line for line in lines[2:] if "X_" not in line]
print("\n".join(lines[:2] + box[:4] + ["..."] + condition))

# %% [markdown]
# ## Complete verification: `method="auto"`
#
# CROWN leaves some samples unknown. `certify(..., method="auto")` runs a
# cascade, each stage only on the samples still unknown: the attack, IBP,
# CROWN, alpha-CROWN, and then, for piecewise-linear networks under an
# L-infinity ball, an *exact* stage: a mixed-integer program per sample
# (MILP, small networks) or branch and bound on ReLU splits (larger ones).
# Exact means: given time, every sample ends verified or falsified.
# `timeout=` (seconds per sample) and `time_budget=` (the whole call) end in
# `unknown`, never in a guess.
#
# `report.extra["settled_by"]` names the stage that settled each sample
# (`"clean"` for a misclassified input, `None` if still unknown) and
# `report.extra["stage_seconds"]` what each stage cost.

# %%
complete = model.certify(
    x_test,
    y_test,
    EPSILON,
    method="auto",
    input_range=(0.0, 1.0),
    timeout=1 if FAST else 20,
    time_budget=TIME_BUDGET,
    verbose=0,
)
print(complete.summary())
settled_by = collections.Counter(str(s) for s in complete.extra["settled_by"])
print("settled by:", dict(settled_by))
stage_seconds = complete.extra["stage_seconds"]
print("seconds per stage:", {k: round(v, 2) for k, v in stage_seconds.items()})

# %% [markdown]
# Left: the verdicts with CROWN alone and with the complete cascade. Right:
# which stage settled how many samples, in the cascade's order ("None": still
# unknown when the time ran out).

# %%
fig = Figure(figsize=(11, 4))
left, right = fig.subplots(1, 2)
verdicts = ["verified", "falsified", "unknown"]
positions = np.arange(len(verdicts))
for k, (name, rep) in enumerate((("CROWN", report), ('method="auto"', complete))):
    counts = [int(getattr(rep, verdict).sum()) for verdict in verdicts]
    bars = left.bar(positions + (k - 0.5) * 0.4, counts, 0.4, label=name)
    left.bar_label(bars, fontsize="small")
left.set_xticks(positions, verdicts)
left.set_ylabel("test images")
left.legend(fontsize="small")
order = ["clean", "attack", "ibp", "crown", "alpha-crown", "milp", "bab", "None"]
stages = sorted(settled_by, key=lambda s: order.index(s) if s in order else 99)
bars = right.bar(stages, [settled_by[s] for s in stages], color="tab:blue")
right.bar_label(bars, fontsize="small")
right.set_ylabel("samples settled")
right.tick_params(axis="x", rotation=30)
fig.tight_layout()
fig

# %% [markdown]
# ## Takeaways
#
# - Export with `report=` so the file carries its certificate and a weights
#   hash; `read_metadata` checks the hash.
# - Certify the exported file with `vn.certify_onnx`: that is the model in
#   production.
# - VNN-LIB and `vn.verify` speak the verification community's format; any
#   other VNN-COMP tool can check the same file and property.
# - `method="auto"` turns unknowns into proofs or counterexamples when the
#   network is small and piecewise linear; budget its time.
