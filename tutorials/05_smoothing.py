# ruff: noqa: B018 - a bare name ending a cell is how a notebook shows it

# %% [markdown]
# # 5. Randomized smoothing: L2 certificates with a probability
#
# Bound methods prove facts about *your network*. Randomized smoothing
# (Cohen, Rosenfeld & Kolter, 2019) proves facts about a *different*
# classifier built from it: the smoothed classifier
#
# `g(x)` = the class the network `f` predicts most often for `x + noise`,
# with Gaussian noise of standard deviation `sigma` on every input value.
#
# If the top class of `g` at `x` has probability `pA > 1/2` under the noise,
# then `g` does not change within the **L2** radius `sigma * Phi^-1(pA)`
# (`Phi^-1` is the standard normal quantile). `pA` is estimated by sampling,
# so the certificate holds **with probability `1 - alpha`**, not always.
# It scales to any network (only forward passes are needed) but certifies L2
# balls, a randomized classifier, and costs many forward passes per
# prediction.
#
# **Fast mode.** With `VERINET_TUTORIAL_FAST=1` (what the tests set) the
# notebook trains briefly and draws few noise samples on few images, to check
# it runs; its numbers then mean nothing.

# %%
# %matplotlib inline
import os

import verinet as vn  # import verinet before keras: it selects the torch backend
from verinet import layers

# isort: split
import keras
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm

FAST = os.environ.get("VERINET_TUTORIAL_FAST") == "1"
EPOCHS = 5 if FAST else 30
N = 200 if FAST else 10_000  # noise draws per image for certify
SIGMA = 0.25

(x_train, y_train), (x_test, y_test) = vn.datasets.digits()
if FAST:
    x_train, y_train = x_train[:500], y_train[:500]
    x_test, y_test = x_test[:40], y_test[:40]

# %% [markdown]
# ## Train the base classifier on noise
#
# The smoothed classifier is only as good as the network's predictions on
# *noisy* inputs. `compile(robust="smoothing", sigma=SIGMA)` trains on
# `x + sigma * N(0, I)` (`vn.objectives.GaussianNoise`); use the same `sigma`
# as for smoothing. For contrast we also train a standard model.


# %%
def build():
    return vn.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Flatten(),
            layers.Dense(256),
            layers.ReLU(),
            layers.Dense(256),
            layers.ReLU(),
            layers.Dense(10),
        ]
    )


models = {}
for name, settings in {
    "noise-trained": {"robust": "smoothing", "sigma": SIGMA},
    "standard": {"robust": "standard"},
}.items():
    keras.utils.set_random_seed(0)
    models[name] = build()
    models[name].compile(keras.optimizers.Adam(1e-3), **settings)
    models[name].fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=0)

rng = np.random.default_rng(0)
noisy = x_test + SIGMA * rng.standard_normal(x_test.shape).astype("float32")
for name, model in models.items():
    clean = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
    on_noise = np.mean(model.predict(noisy, verbose=0).argmax(1) == y_test)
    print(f"{name:14s} clean accuracy {clean:.3f}, on noisy inputs {on_noise:.3f}")

# %% [markdown]
# ## Predict, or abstain
#
# `SmoothedClassifier(model, sigma).predict(x, n, alpha)` draws `n` noisy
# copies of each input and counts the network's votes. When the two most
# voted classes are too close to tell apart at level `alpha`, it **abstains**
# and returns `-1` rather than guess. More draws make abstentions rarer.

# %%
smoothed = vn.smoothing.SmoothedClassifier(models["noise-trained"], sigma=SIGMA)
few = x_test[:12]
print("labels      ", y_test[:12])
for n in (20, 100, 1000):
    prediction = smoothed.predict(few, n=n, alpha=0.001, seed=0, verbose=0)
    print(f"n={n:<5d}     ", prediction)

# %% [markdown]
# ## Certify
#
# `certify(x, y, n0, n, alpha)` follows Cohen et al.'s CERTIFY: `n0` draws
# choose the candidate class, `n` fresh draws estimate its probability, and
# `pA_lower` is a one-sided Clopper-Pearson lower bound on it at confidence
# `1 - alpha`. If `pA_lower > 1/2` the image gets the class and the radius
# `sigma * Phi^-1(pA_lower)`; otherwise it abstains (radius 0).
#
# The report's `certified_accuracy(r)` is the share of images predicted
# correctly with a certified radius of at least `r`. At `r = 0` it is the
# smoothed classifier's accuracy (abstentions count as wrong).

# %%
report = smoothed.certify(x_test, y_test, n0=100, n=N, alpha=0.001, seed=0, verbose=0)
print(report.summary(radii=(0.0, 0.25, 0.5, 0.75)))
print("abstained on", int(report.abstained.sum()), "of", report.num_samples, "images")

# %% [markdown]
# For comparison, the standard model smoothed with the same sigma:

# %%
standard_report = vn.smoothing.SmoothedClassifier(models["standard"], SIGMA).certify(
    x_test, y_test, n0=100, n=N, alpha=0.001, seed=0, verbose=0
)
print(standard_report.summary(radii=(0.0, 0.25, 0.5, 0.75)))

# %% [markdown]
# `vn.plot.smoothing_certified_accuracy` draws certified accuracy against the
# radius (each report's `.plot()` does the same). We draw both models on one
# axes and relabel the lines.

# %%
fig = Figure(figsize=(6.5, 4))
ax = fig.subplots()
for name, rep, color in (
    ("noise-trained", report, "tab:blue"),
    ("standard", standard_report, "tab:red"),
):
    vn.plot.smoothing_certified_accuracy(rep, ax=ax)
    ax.lines[-1].set_color(color)
    ax.lines[-1].set_label(f"{name}, sigma={SIGMA}")
ax.legend(fontsize="small")
fig

# %% [markdown]
# ## What alpha (and n) mean
#
# `alpha` is the probability, over the random noise drawn during
# certification, that a certificate is wrong: with probability at least
# `1 - alpha` per image, the smoothed classifier really predicts the returned
# class everywhere in the returned L2 ball. It is not a bound on how often
# the *network* errs, and fixing the seed does not turn it into a proof.
#
# A smaller `alpha` asks for more confidence, so `pA_lower` drops: radii
# shrink and more images abstain. More draws `n` tighten the estimate. Even
# when every draw votes for the top class, the radius cannot exceed
# `sigma * Phi^-1(alpha ** (1 / n))`:

# %%
for n in (100, 1000, N):
    for alpha in (0.1, 0.001):
        top = SIGMA * norm.ppf(alpha ** (1 / n))
        print(f"n={n:<6d} alpha={alpha:<6g} largest possible radius {top:.3f}")

# %%
fig = Figure(figsize=(6.5, 4))
ax = fig.subplots()
variants = [(N, 0.1), (N, 0.001), (max(N // 10, 20), 0.001)]
for (n, alpha), color in zip(
    variants, ("tab:green", "tab:blue", "tab:orange"), strict=True
):
    rep = smoothed.certify(x_test, y_test, n0=100, n=n, alpha=alpha, seed=1, verbose=0)
    vn.plot.smoothing_certified_accuracy(rep, ax=ax)
    ax.lines[-1].set_color(color)
    ax.lines[-1].set_label(
        f"n={n}, alpha={alpha:g} ({int(rep.abstained.sum())} abstain)"
    )
ax.set_title(f"Noise-trained model, sigma={SIGMA}", fontsize="small")
ax.legend(fontsize="small")
fig

# %% [markdown]
# ## Takeaways
#
# - Train the base network on noise of the same `sigma`
#   (`robust="smoothing"`); a network trained without noise and smoothed
#   afterwards usually certifies less, and less the larger the radius.
# - The certificate is for the smoothed classifier, in L2, with probability
#   `1 - alpha`. Deploy the smoothed classifier (`predict`, with its
#   abstentions), not the bare network, if you rely on it.
# - `sigma` trades accuracy for radius; `n` buys radius with forward passes;
#   `alpha` is how much risk of a wrong certificate you accept.
# - For L-infinity guarantees that hold always, use bounds (tutorials 1-4).
