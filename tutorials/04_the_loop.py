# ruff: noqa: B018 - a bare name ending a cell is how a notebook shows it

# %% [markdown]
# # 4. The training loop: monitor, stop, analyze, refine
#
# The metrics Keras prints during robust training (`verified_accuracy`,
# `adversarial_accuracy`) are measured on the training batches, with the
# training bounds, *at the epsilon the schedule has reached*: while epsilon
# ramps up they describe a smaller radius than the one you care about. This
# notebook closes the loop on the real target:
#
# 1. `vn.callbacks.CertifyEvery` certifies held-out data at the target radius
#    during `fit` and writes `val_certified_accuracy` into the epoch logs;
# 2. Keras's own `EarlyStopping` stops on it and keeps the best weights;
# 3. `report.analyze()` says where the certificate fails;
# 4. `vn.refine` retrains on exactly those samples.
#
# **Fast mode.** With `VERINET_TUTORIAL_FAST=1` (what the tests set) the
# notebook trains for a few epochs on a few hundred images, to check it runs;
# its numbers then mean nothing.

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
EPOCHS = 6 if FAST else 30
REFINE_ROUNDS = 1 if FAST else 5
EPSILON = 0.05
keras.utils.set_random_seed(0)

(x_train, y_train), (x_test, y_test) = vn.datasets.digits()
if FAST:
    x_train, y_train = x_train[:500], y_train[:500]
    x_test, y_test = x_test[:60], y_test[:60]
# Hold out a validation split: early stopping must not look at the test set.
n_val = len(x_train) // 5
x_val, y_val = x_train[:n_val], y_train[:n_val]
x_fit, y_fit = x_train[n_val:], y_train[n_val:]
print("fit", len(x_fit), "validation", len(x_val), "test", len(x_test))

# %% [markdown]
# ## CertifyEvery, then EarlyStopping
#
# `CertifyEvery(x_val, y_val, every=1)` runs `vn.certify` (CROWN bounds and
# the PGD attack) at the end of each epoch, at the *target* epsilon of
# `compile`, in inference mode, and adds two keys to the epoch logs:
# `val_certified_accuracy` and `val_attack_accuracy`.
#
# Two details matter:
#
# - **Order.** Keras calls the callbacks in list order with one logs dict, so
#   `CertifyEvery` must come *before* any callback that reads its keys.
# - **Direction.** Keras cannot guess whether a custom metric should go up or
#   down: pass `mode="max"`.
#
# The epsilon ramp takes the first half of the epochs; `start_from_epoch`
# keeps EarlyStopping from judging the model before it has trained at the
# full radius.

# %%
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
    keras.optimizers.Adam(1e-3),
    robust="crown-ibp",
    epsilon=EPSILON,
    input_range=(0.0, 1.0),
)
certifier = vn.callbacks.CertifyEvery(x_val, y_val, every=1)
stopper = keras.callbacks.EarlyStopping(
    monitor="val_certified_accuracy",
    mode="max",
    patience=5,
    start_from_epoch=EPOCHS // 2,
    restore_best_weights=True,
)
history = model.fit(
    x_fit,
    y_fit,
    epochs=EPOCHS,
    batch_size=64,
    callbacks=[certifier, stopper],  # CertifyEvery first
    verbose=0,
)
print(f"trained {len(history.epoch)} of {EPOCHS} epochs")
if stopper.best_epoch is not None and stopper.best_weights is not None:
    # EarlyStopping put these weights back at the end of fit.
    print(f"kept epoch {stopper.best_epoch}: val_certified_accuracy {stopper.best:.3f}")
for entry in certifier.history[-3:]:
    print(
        f"epoch {entry['epoch']:2d}: certified {entry['certified_accuracy']:.3f}, "
        f"attack {entry['attack_accuracy']:.3f} ({entry['seconds']:.2f} s)"
    )

# %% [markdown]
# `vn.plot.training_curves` draws the History: losses on the left; on the
# right the accuracies, the validation series dashed, and the epsilon ramp on
# a second axis. Note how the training `verified_accuracy` (at the ramping
# epsilon) and `val_certified_accuracy` (at the target) differ while the ramp
# is on.

# %%
vn.plot.training_curves(history)

# %% [markdown]
# ## Where does the certificate fail?
#
# Certify the test set with the weights EarlyStopping kept, and break the
# report down. *Attacked* samples are real vulnerabilities (the attack found
# an adversarial example); *unknown* ones only lack a proof; misclassified
# ones are wrong even without a perturbation.

# %%
before = model.certify(x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0)
analysis = before.analyze()
print(analysis)

# %%
classes = sorted(analysis.per_class)
print("class  samples  verified  attacked  misclassified  unknown")
for label in classes:
    c = analysis.per_class[label]
    print(
        f"{label:5d} {c['samples']:8d} {c['verified']:9d} {c['attacked']:9d} "
        f"{c['misclassified']:14d} {c['unknown']:8d}"
    )

# %% [markdown]
# ## `vn.refine`: train on what is not yet proven
#
# `vn.refine(model, x, y, validation_data, rounds=...)` certifies the training
# samples, gives the unknown and falsified ones a larger sample weight
# (`weight=4.0`), adds the attack's counterexamples with their true labels,
# trains one epoch with the model's own robust objective, and certifies the
# validation data. It stops after `rounds`, or when the validation certified
# accuracy has not improved for `patience` rounds, and keeps the best round's
# weights (round 0 is the model as given, so it never makes things worse on
# the validation data). On a few hundred validation samples the figure moves
# by a few points from round to round, so judge the result on the test set.

# %%
refined = vn.refine(
    model,
    x_fit,
    y_fit,
    (x_val, y_val),
    rounds=REFINE_ROUNDS,
    patience=2,
    verbose=1,
)
print("best round:", refined["best_round"])
print(f"validation certified: {refined['initial_val_certified_accuracy']:.3f} before")
print(f"                      {refined['best_val_certified_accuracy']:.3f} best")

# %% [markdown]
# Each round's validation figures and how many training samples were left
# unknown or falsified:

# %%
rounds = [0, *refined["round"]]
certified = [
    refined["initial_val_certified_accuracy"],
    *refined["val_certified_accuracy"],
]
attacked = [refined["initial_val_attack_accuracy"], *refined["val_attack_accuracy"]]
fig = Figure(figsize=(10, 3.8))
left, right = fig.subplots(1, 2)
left.plot(rounds, certified, marker="o", label="val certified accuracy")
left.plot(rounds, attacked, marker="s", linestyle="--", label="val attack accuracy")
left.axvline(refined["best_round"], color="grey", linestyle=":", label="kept")
left.set_xlabel("refine round (0: before)")
left.set_ylabel("accuracy")
left.set_xticks(rounds)
left.legend(fontsize="small")
left.grid(alpha=0.3)
right.bar(
    np.array(refined["round"]) - 0.2, refined["train_unknown"], 0.4, label="unknown"
)
right.bar(
    np.array(refined["round"]) + 0.2,
    refined["train_falsified"],
    0.4,
    label="falsified",
)
right.set_xlabel("refine round")
right.set_ylabel("training samples")
right.set_xticks(refined["round"])
right.legend(fontsize="small")
right.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig

# %% [markdown]
# ## Before and after, on the test set
#
# The test set was used for nothing above, so this is the honest comparison.

# %%
after = model.certify(x_test, y_test, EPSILON, input_range=(0.0, 1.0), verbose=0)
print("            clean  attack  verified  unknown")
for name, report in (("before", before), ("after", after)):
    print(
        f"{name:10s} {report.clean_accuracy:6.3f} {report.attack_accuracy:7.3f} "
        f"{report.verified_accuracy:9.3f} {int(report.unknown.sum()):8d}"
    )

# %% [markdown]
# ## Takeaways
#
# - Monitor robustness at the target radius with `CertifyEvery`, listed before
#   the callbacks that read `val_certified_accuracy`, with `mode="max"`.
# - `ModelCheckpoint(monitor="val_certified_accuracy", mode="max",
#   save_best_only=True)` works the same way.
# - `report.analyze()` separates real vulnerabilities from missing proofs.
# - `vn.refine` spends extra training on the samples that are not proven and
#   keeps the best round.
