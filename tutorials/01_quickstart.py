# ruff: noqa: B018 - a bare name ending a cell is how a notebook shows it

# %% [markdown]
# # 1. Quickstart: train a robust model, prove it, read the proof
#
# An *adversarial perturbation* is a small change to an input, chosen to flip
# the model's prediction. Testing with attacks shows that a model *can* be
# fooled; it never shows that it *cannot*. verinet does both: it trains a
# Keras model to resist perturbations of size `epsilon`, then **proves**, input
# by input, that no perturbation inside that radius changes the prediction, and
# hands you a real adversarial example wherever its attack finds one.
#
# This notebook goes through the whole loop once on the digits data that ships
# with scikit-learn (8x8 grey images, pixels in [0, 1]; nothing is downloaded).
#
# **Fast mode.** Every tutorial reads the environment variable
# `VERINET_TUTORIAL_FAST`: when it is `1` (the test suite sets it), epochs and
# data shrink so the notebook runs in seconds; its numbers are then
# meaningless. Leave it unset to get the results the docs show.

# %%
# %matplotlib inline
import os

import verinet as vn  # import verinet before keras: it selects the torch backend
from verinet import layers

# isort: split
import keras
import numpy as np

FAST = os.environ.get("VERINET_TUTORIAL_FAST") == "1"
EPOCHS = 5 if FAST else 25
keras.utils.set_random_seed(0)

# %% [markdown]
# ## The data
#
# `vn.datasets.digits()` returns float32 images shaped `(n, 8, 8, 1)` in
# [0, 1] and integer labels 0-9, already split into training and test sets.

# %%
(x_train, y_train), (x_test, y_test) = vn.datasets.digits()
if FAST:
    x_train, y_train = x_train[:500], y_train[:500]
    x_test, y_test = x_test[:100], y_test[:100]
print("train", x_train.shape, "test", x_test.shape)

# %% [markdown]
# ## Build and robust-train
#
# `vn.Sequential` is Keras's `Sequential` with a robust `compile`; the layers
# come from `verinet.layers`, Keras layers that also know how to propagate
# *bounds* (that is what lets verinet prove things about them).
#
# `compile(robust="crown-ibp", epsilon=EPSILON)` swaps the ordinary loss for
# a *certified* loss: at every step it computes a bound on the worst output
# over the L-infinity ball of radius `epsilon` around each training image and
# trains that worst case to be correct. `input_range=(0, 1)` says which inputs
# are valid, so the ball never leaves the pixel range. Epsilon ramps up from 0
# over the first half of training, because starting at the full radius
# usually keeps the network from learning; History records the ramp in
# `epsilon`.
#
# An L-infinity radius of 0.05 lets every pixel move by up to 5% of its range
# at once.

# %%
EPSILON = 0.05

model = vn.Sequential(
    [
        layers.Input((8, 8, 1)),
        layers.Flatten(),
        layers.Dense(128, kernel_initializer="ibp"),
        layers.ReLU(),
        layers.Dense(128, kernel_initializer="ibp"),
        layers.ReLU(),
        layers.Dense(10, kernel_initializer="ibp"),
    ]
)
model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    robust="crown-ibp",
    epsilon=EPSILON,
    input_range=(0.0, 1.0),
)
history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)
print(model.robust_summary())
last = {key: round(values[-1], 4) for key, values in history.history.items()}
print("last epoch:", last)

# %% [markdown]
# `verified_accuracy` in History is measured on the training batches *at the
# epsilon the ramp had reached*, with the cheap bounds used for training. The
# real question is answered on the test set, at the full radius.
#
# ## Certify
#
# `model.certify(x, y, epsilon, method="crown")` computes CROWN bounds on every
# test image, and also runs a PGD attack on it. Each sample ends in exactly one
# of three verdicts:
#
# - **verified**: the bound *proves* that every input within `epsilon` (and
#   inside `input_range`) gets the correct label. This is a certificate, not a
#   test.
# - **falsified**: the clean image is already misclassified, or the attack
#   found a real adversarial example inside the ball (the report keeps it).
# - **unknown**: neither. The attack did not break it, but the bound was too
#   loose to prove it. The true answer may go either way; a tighter method
#   (alpha-CROWN, complete verification, see tutorial 6) can settle it.
#
# So verified accuracy is a *lower* bound on the true robust accuracy and
# attack accuracy (the share the attack could not break) an *upper* bound.

# %%
report = model.certify(
    x_test, y_test, epsilon=EPSILON, method="crown", input_range=(0.0, 1.0), verbose=0
)
print(report.summary())

# %%
print("verified  :", np.flatnonzero(report.verified)[:10], "...")
print("falsified :", np.flatnonzero(report.falsified)[:10], "...")
print("unknown   :", np.flatnonzero(report.unknown)[:10], "...")
assert not np.any(report.verified & report.falsified)  # never both

# %% [markdown]
# In a notebook the report also displays itself as a table:

# %%
report

# %% [markdown]
# ## Where does it fail? `report.analyze()`
#
# The analysis splits the verdicts per class (verified, *attacked* = correctly
# classified but broken by the attack, *misclassified*, unknown), lists the
# inputs closest to losing their certificate, and summarizes the *margins*:
# the lower bound of `logit[true] - logit[other]` over the ball. A positive
# smallest margin is a proof; a negative one means the bound could not rule an
# attack out.

# %%
analysis = report.analyze()
print(analysis)

# %% [markdown]
# The counts are also there as data, e.g. for the class the attack broke most:

# %%
weakest = max(analysis.per_class, key=lambda c: analysis.per_class[c]["attacked"])
print(f"class {weakest}:", analysis.per_class[weakest])

# %% [markdown]
# ## Figures
#
# Verdicts per class: where the model is proven, broken or undecided.

# %%
report.plot("verdicts")

# %% [markdown]
# The smallest margin bound of each correctly classified test image; right of
# the line at 0 means verified.

# %%
report.plot("margins")

# %% [markdown]
# And what an adversarial example looks like: each clean image beside the
# counterexample the attack found for it (titled with the model's prediction),
# when the attack found any.

# %%
broken = report.falsified & (report.predictions == report.labels)
print(f"{int(broken.sum())} correctly classified test images were broken")
fig = None
if broken.any():
    fig = report.plot("counterexamples", model=model, count=8)
fig

# %% [markdown]
# ## Next
#
# - Tutorial 2 compares the training methods (standard, PGD, TRADES, IBP,
#   CROWN-IBP, smoothing) on clean, attacked and verified accuracy.
# - Tutorial 4 monitors the certified accuracy while training.
# - Tutorial 6 deploys the proven model and settles the unknown samples.
