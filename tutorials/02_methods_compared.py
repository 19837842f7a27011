# ruff: noqa: B018 - a bare name ending a cell is how a notebook shows it

# %% [markdown]
# # 2. Training methods compared
#
# `compile(robust=...)` chooses what a training step optimizes. This notebook
# trains the same network six ways and *measures*, for each one, what it costs
# and what it buys:
#
# - `"standard"` trains on the clean inputs, for accuracy;
# - `"pgd"` trains on PGD adversarial examples (Madry et al.), to resist
#   attacks;
# - `"trades"` adds to the clean loss a KL term towards adversarial examples
#   (Zhang et al.), to resist attacks with less loss of accuracy;
# - `"ibp"` trains interval bounds on the worst case (Gowal et al.), for
#   provable robustness, cheaply;
# - `"crown-ibp"` mixes IBP and CROWN bounds (Zhang et al.), for provable
#   robustness with tighter bounds;
# - `"smoothing"` trains on Gaussian-noised inputs (Cohen et al.), for a
#   *smoothed* classifier with L2 certificates.
#
# Three accuracies, on the test set, at L-infinity radius `EPSILON`:
#
# - **clean**: ordinary accuracy;
# - **attack**: the share that a PGD attack could *not* break (an upper bound
#   on the true robust accuracy: a stronger attack might do better);
# - **verified**: the share CROWN *proves* robust (a lower bound).
#
# **Fast mode.** With `VERINET_TUTORIAL_FAST=1` (what the tests set) the
# notebook trains on a few hundred images for a few epochs each, to check that
# it runs; its numbers then mean nothing.

# %%
# %matplotlib inline
import os
import time

import verinet as vn  # import verinet before keras: it selects the torch backend
from verinet import layers

# isort: split
import keras
import numpy as np
from matplotlib.figure import Figure

FAST = os.environ.get("VERINET_TUTORIAL_FAST") == "1"
EPOCHS = 3 if FAST else 20
SMOOTHING_N = 200 if FAST else 2000

(x_train, y_train), (x_test, y_test) = vn.datasets.digits()
if FAST:
    x_train, y_train = x_train[:500], y_train[:500]
    x_test, y_test = x_test[:60], y_test[:60]

# %% [markdown]
# ## One network, six objectives
#
# The same MLP and the same optimizer for every method; only `robust=` (and
# its radius) changes. `"smoothing"` takes the noise level `sigma` instead of
# an epsilon. A small callback times every epoch; the table shows the median
# epoch (the first one also pays one-off set-up costs). On a network this
# small the absolute times are mostly framework overhead; the ratios to
# standard training say more.

# %%
EPSILON = 0.1
SIGMA = 0.5


def build():
    return vn.Sequential(
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


SETTINGS = {
    "standard": {"robust": "standard"},
    "pgd": {"robust": "pgd", "epsilon": EPSILON},
    "trades": {"robust": "trades", "epsilon": EPSILON},
    "ibp": {"robust": "ibp", "epsilon": EPSILON},
    "crown-ibp": {"robust": "crown-ibp", "epsilon": EPSILON},
    "smoothing": {"robust": "smoothing", "sigma": SIGMA},
}


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.seconds = []


models, seconds_per_epoch = {}, {}
for name, settings in SETTINGS.items():
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.Adam(1e-3), input_range=(0.0, 1.0), **settings)
    timer = EpochTimer()
    model.fit(
        x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0, callbacks=[timer]
    )
    # The median epoch: the first one also pays one-off set-up costs.
    seconds_per_epoch[name] = float(np.median(timer.seconds))
    models[name] = model
    print(f"{name:10s} {seconds_per_epoch[name]:6.2f} s/epoch")

# %% [markdown]
# ## Clean, attacked and verified accuracy
#
# `vn.certify` gives all three at once: the clean predictions, a PGD attack
# (its `attack_accuracy`) and CROWN bounds (its `verified_accuracy`).

# %%
reports = {
    name: vn.certify(
        model,
        x_test,
        y_test,
        EPSILON,
        method="crown",
        input_range=(0.0, 1.0),
        verbose=0,
    )
    for name, model in models.items()
}

# %% [markdown]
# ## Smoothing certifies something else
#
# Randomized smoothing does not certify the network itself but the *smoothed
# classifier* `g(x)` = the class the network predicts most often under
# Gaussian noise of standard deviation `sigma`. `SmoothedClassifier.certify`
# estimates it from `n` noisy copies per image and returns an **L2** radius per
# image that holds **with probability 1 - alpha** (it is a statistical
# certificate, not a proof that can never fail; see tutorial 5).
#
# How does an L2 radius compare with an L-infinity one? Over the 64 pixels,
# the L2 ball of radius `EPSILON` lies *inside* the L-infinity ball of radius
# `EPSILON` (a weaker guarantee), and the L2 ball of radius
# `EPSILON * sqrt(64)` *contains* it (a stronger one). We report the smoothed
# classifier's certified accuracy at both radii: they bracket a comparison
# with the other rows. The network under the smoothed classifier also gets
# the ordinary certify row. `sigma` must be large enough for the larger
# radius to be reachable at all (see tutorial 5).

# %%
L2_INSIDE = EPSILON
L2_AROUND = EPSILON * np.sqrt(np.prod(x_test.shape[1:]))
smoothed = vn.smoothing.SmoothedClassifier(models["smoothing"], sigma=SIGMA)
smoothing_report = smoothed.certify(
    x_test, y_test, n0=100, n=SMOOTHING_N, alpha=0.001, seed=0, verbose=0
)
inside, around = smoothing_report.certified_accuracy([L2_INSIDE, L2_AROUND])
print(
    f"smoothed classifier (sigma={SIGMA}, n={SMOOTHING_N}, "
    f"probability 1 - {smoothing_report.alpha:g}):"
)
print(
    f"  certified accuracy at L2 radius {L2_INSIDE:.2f} (inside the Linf ball): "
    f"{inside:.3f}"
)
print(
    f"  certified accuracy at L2 radius {L2_AROUND:.2f} (around the Linf ball): "
    f"{around:.3f}"
)

# %% [markdown]
# ## The table

# %%
standard_cost = seconds_per_epoch["standard"]
header = (
    f"{'method':10s} {'s/epoch':>8s} {'x std':>6s} {'clean':>6s} {'attack':>7s} "
    f"{'verified':>9s}"
)
print(header)
print("-" * len(header))
for name, report in reports.items():
    print(
        f"{name:10s} {seconds_per_epoch[name]:8.2f} "
        f"{seconds_per_epoch[name] / standard_cost:6.1f} "
        f"{report.clean_accuracy:6.3f} {report.attack_accuracy:7.3f} "
        f"{report.verified_accuracy:9.3f}"
    )
print(
    f"{'smoothed':10s} {'':8s} {'':6s} {'':6s} {'':7s} {inside:9.3f}  "
    f"L2 r={L2_INSIDE:.2f}, probabilistic"
)
print(
    f"{'smoothed':10s} {'':8s} {'':6s} {'':6s} {'':7s} {around:9.3f}  "
    f"L2 r={L2_AROUND:.2f}, probabilistic"
)
print(
    f"\nattack and verified: L-infinity epsilon {EPSILON} (PGD attack, CROWN "
    f"bounds); smoothed: the smoothed classifier's certified accuracy, "
    f"probability 1 - {smoothing_report.alpha:g}"
)

# %% [markdown]
# ## The figure
#
# Left, the three accuracies per method (for smoothing, two more, hatched
# bars: its probabilistic L2 certificates at the two radii). Right, the cost
# of an epoch relative to standard training.
#
# What to look for when reading it: the distance between a method's attack
# bar and its verified bar is the share of *unknown* samples, robustness
# that may be there but is not proven. Attack-based training (PGD, TRADES)
# makes the attack fail but puts nothing in the loss that makes the bounds
# tight; certified training (IBP, CROWN-IBP) trains the bound itself, which
# tends to shrink that distance, usually at some cost in clean accuracy. How
# large each effect is depends on the data, the network and the radius:
# measure it, as here.

# %%
names = list(reports)
positions = np.arange(len(names))
fig = Figure(figsize=(12, 4.2))
ax, cost_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
width = 0.22
series = {
    "clean": [reports[n].clean_accuracy for n in names],
    "attack (PGD)": [reports[n].attack_accuracy for n in names],
    "verified (CROWN)": [reports[n].verified_accuracy for n in names],
}
for k, (label, values) in enumerate(series.items()):
    ax.bar(positions + (k - 1) * width, values, width, label=label)
for k, (radius, value, color) in enumerate(
    ((L2_INSIDE, inside, "tab:purple"), (L2_AROUND, around, "tab:brown"))
):
    ax.bar(
        positions[-1] + (2 + k) * width,
        value,
        width,
        hatch="//",
        color="white",
        edgecolor=color,
        label=f"smoothed, L2 r={radius:.2f} (prob.)",
    )
ax.set_xticks(positions, names)
ax.set_ylim(0, 1)
ax.set_ylabel(f"test accuracy (L-inf eps={EPSILON})")
ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
ax.grid(axis="y", alpha=0.3)
cost_ax.bar(positions, [seconds_per_epoch[n] / standard_cost for n in names])
cost_ax.set_xticks(positions, names, rotation=30)
cost_ax.set_ylabel("seconds per epoch / standard")
cost_ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig

# %% [markdown]
# ## Takeaways
#
# - Only bounds (verified) or smoothing (certified with probability 1 - alpha)
#   give guarantees; attack accuracy only says what one attack failed to do.
# - Compare methods on verified accuracy at the radius you need, next to
#   clean accuracy and training cost; on small, easy data even attack-trained
#   models may verify well, and the differences tend to grow on harder problems.
# - Attack-based training pays per step for the attack's iterations (`steps=`,
#   10 by default); bound-based training pays for the bound passes.
# - Smoothing certifies an L2 radius for a different, randomized classifier;
#   compare it with L-infinity results only through the containment argument
#   above.
