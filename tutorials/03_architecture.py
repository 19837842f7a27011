# ruff: noqa: B018 - a bare name ending a cell is how a notebook shows it

# %% [markdown]
# # 3. Architecture choices for verifiable networks
#
# A bound method pushes a whole *set* of inputs through the network, layer by
# layer. How loose the result gets depends on the layers: this notebook
# compares activations (ReLU and GeLU), adds residual blocks, and shows what
# batch normalization means for certification and how `vn.deploy` folds it
# away for the model you ship.
#
# **Fast mode.** With `VERINET_TUTORIAL_FAST=1` (what the tests set) the
# models train on a few hundred images for a few epochs, to check the
# notebook runs; its numbers then mean nothing.

# %%
# %matplotlib inline
import os

import verinet as vn  # import verinet before keras: it selects the torch backend
from verinet import layers

# isort: split
import keras
import numpy as np
from matplotlib.figure import Figure

FAST = os.environ.get("VERINET_TUTORIAL_FAST") == "1"
EPOCHS = 3 if FAST else 20
EPSILON = 0.05

(x_train, y_train), (x_test, y_test) = vn.datasets.digits()
if FAST:
    x_train, y_train = x_train[:500], y_train[:500]
    x_test, y_test = x_test[:60], y_test[:60]


def train(model):
    """CROWN-IBP training at EPSILON, the same for every architecture."""
    keras.utils.set_random_seed(0)
    model.compile(
        keras.optimizers.Adam(1e-3),
        robust="crown-ibp",
        epsilon=EPSILON,
        input_range=(0.0, 1.0),
    )
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
    return model


def certify(model):
    return vn.certify(model, x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0)


def mlp(activation):
    return vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(128),
            activation(),
            layers.Dense(128),
            activation(),
            layers.Dense(10),
        ]
    )


# %% [markdown]
# ## ReLU or GeLU?
#
# For each hidden neuron, a bound method knows an interval its input lies in
# and replaces the activation by two lines, one below and one above it over
# that interval (a *linear relaxation*).
#
# - **ReLU** is piecewise linear. A neuron whose interval is all positive or
#   all negative (*stable*) is represented exactly; only the *unstable* ones,
#   whose interval contains 0, lose precision. Certified training pushes
#   neurons to be stable. Piecewise-linear networks can also be solved
#   exactly (MILP, branch and bound: `certify(method="auto")`, tutorial 6).
# - **GeLU** is smooth and curved everywhere, so every neuron needs a
#   relaxation with some slack, and complete verification does not apply.
#
# Same network, same training, only the activation differs:

# %%
relu_model = train(mlp(layers.ReLU))
gelu_model = train(mlp(layers.GeLU))
reports = {"ReLU": certify(relu_model), "GeLU": certify(gelu_model)}
for name, report in reports.items():
    print(
        f"{name:5s} clean {report.clean_accuracy:.3f}  "
        f"attack {report.attack_accuracy:.3f}  verified {report.verified_accuracy:.3f}"
    )

# %% [markdown]
# ## Residual blocks
#
# `layers.ResidualBlock(filters, kernel_size=3, activation="relu")` computes
# `x + f(x)` with `f` = linear -> activation -> linear. On vectors the linear
# maps are `Dense` (`filters` units, then back to the input width); on images
# they are `"same"` `Conv2D`s (`filters` channels, then back to the input
# channels, with `kernel_size`). The bound engine expands the block into its
# parts, so CROWN sees the activation inside it and the skip connection: the
# identity path carries the input bounds through without loss.

# %%
residual_model = vn.Sequential(
    [
        layers.Input((8, 8, 1)),
        layers.Flatten(),
        layers.Dense(128),
        layers.ReLU(),
        layers.ResidualBlock(64),  # 128 -> 64 -> ReLU -> 128, plus the input
        layers.ReLU(),
        layers.Dense(10),
    ]
)
residual_model = train(residual_model)
reports["ReLU + residual"] = certify(residual_model)
print(reports["ReLU + residual"].summary())

# %% [markdown]
# ## Bound widths, layer by layer
#
# `vn.plot.bound_widths` plots the mean width (upper - lower) of each layer's
# bounds for several methods: IBP (intervals, cheapest), CROWN
# (back-substitution) and alpha-CROWN (CROWN with optimized relaxation
# slopes). Linear layers widen the bounds and activations cut them back, so
# the lines zigzag; the gap between the methods opens with depth. The
# tighter the method, the slower. The residual block appears as its parts
# (the last of them is the sum).

# %%
fig = Figure(figsize=(13, 4.2))
left, right = fig.subplots(1, 2)
sample = x_test[: 8 if FAST else 32]
vn.plot.bound_widths(gelu_model, sample, EPSILON, input_range=(0.0, 1.0), ax=left)
left.set_title("GeLU MLP")
vn.plot.bound_widths(residual_model, sample, EPSILON, input_range=(0.0, 1.0), ax=right)
right.set_title("ReLU MLP with a residual block")
fig.tight_layout()
fig

# %% [markdown]
# ## Batch normalization: training versus deployment
#
# `BatchNormalization` behaves differently in the two modes:
#
# - **training** (`training=True`): it normalizes with the statistics of the
#   current batch, so one input's output depends on the other inputs in the
#   batch. Certified training bounds this mode, with the statistics of the
#   clean batch held fixed.
# - **inference** (`training=False`): it applies the moving averages, a fixed
#   per-feature affine map `y = scale * x + shift`. This is the function you
#   ship, and the one `certify` proves things about.

# %%
bn_model = vn.Sequential(
    [
        layers.Input((8, 8, 1)),
        layers.Flatten(),
        layers.Dense(128),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Dense(128),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Dense(10),
    ]
)
bn_model = train(bn_model)
batch = x_test[:64]
in_training = keras.ops.convert_to_numpy(bn_model(batch, training=True))
in_inference = keras.ops.convert_to_numpy(bn_model(batch, training=False))
print("largest logit difference, training vs inference mode:")
print(f"  {np.max(np.abs(in_training - in_inference)):.4f}")

# %% [markdown]
# ### Folding with `vn.deploy`
#
# An affine map right after a `Dense` (or `Conv2D`) layer can be merged into
# its weights: `W' = W * scale`, `b' = b * scale + shift`. `vn.deploy(model)`
# returns that inference architecture as a new model: batch norm folded,
# dropout removed, the original left untouched. It computes the same function
# to float rounding, and its bounds are the same up to rounding too, since
# the bound of a folded layer is the bound of the two layers it replaces.

# %%
deployed = vn.deploy(bn_model)
print("layers before:", [layer.__class__.__name__ for layer in bn_model.layers])
print("layers after: ", [layer.__class__.__name__ for layer in deployed.layers])

outputs = bn_model.predict(x_test, verbose=0)
deployed_outputs = deployed.predict(x_test, verbose=0)
print(f"largest output difference: {np.max(np.abs(outputs - deployed_outputs)):.2e}")

for method in ("ibp", "crown"):
    low, up = vn.compute_bounds(
        bn_model, x_test, EPSILON, method=method, input_range=(0.0, 1.0)
    )
    d_low, d_up = vn.compute_bounds(
        deployed, x_test, EPSILON, method=method, input_range=(0.0, 1.0)
    )
    gap = max(np.max(np.abs(low - d_low)), np.max(np.abs(up - d_up)))
    width = np.mean(up - low)
    print(f"{method:5s} largest bound difference {gap:.2e} (mean width {width:.3f})")

# %% [markdown]
# The verdicts should agree sample by sample (the cell checks); the weights
# hash in the reports differs, because the deployed model has other
# weights. Tutorial 6 exports the deployed model to ONNX and certifies the
# file itself.

# %%
bn_report = certify(bn_model)
deployed_report = certify(deployed)
reports["ReLU + batch norm"] = bn_report
same = np.array_equal(bn_report.verified, deployed_report.verified) and (
    np.array_equal(bn_report.falsified, deployed_report.falsified)
)
print("same verdicts:", same)
print("weights hash, trained: ", bn_report.weights_sha256[:16])
print("weights hash, deployed:", deployed_report.weights_sha256[:16])

# %% [markdown]
# ## All architectures side by side

# %%
names = list(reports)
fig = Figure(figsize=(8, 3.8))
ax = fig.subplots()
positions = np.arange(len(names))
for k, (label, key) in enumerate(
    [
        ("clean", "clean_accuracy"),
        ("attack", "attack_accuracy"),
        ("verified", "verified_accuracy"),
    ]
):
    values = [getattr(reports[name], key) for name in names]
    ax.bar(positions + (k - 1) * 0.25, values, 0.25, label=label)
ax.set_xticks(positions, names)
ax.set_ylim(0, 1)
ax.set_ylabel(f"test accuracy (L-inf eps={EPSILON})")
ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
ax.grid(axis="y", alpha=0.3)
fig

# %% [markdown]
# ## Takeaways
#
# - Prefer ReLU when you want proofs: stable ReLUs cost nothing in the bounds
#   and the exact solvers apply. GeLU, Tanh and Sigmoid are supported, with
#   looser relaxations.
# - Residual blocks are bound-aware: the bound engine sees the layers inside
#   them, so they train with `robust=` and certify like any other layer.
# - Batch norm is certified in inference mode; `vn.deploy` folds it into the
#   preceding layer and keeps the function and the bounds. Certify the model
#   you deploy.
