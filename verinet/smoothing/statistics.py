"""The statistics of randomized smoothing (Cohen, Rosenfeld & Kolter 2019).

Pure functions of counts: the Clopper-Pearson lower confidence bound on the
top class's probability, the binomial test behind ``predict``'s abstention,
and the certified L2 radius.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["abstain_p_value", "certified_radius", "lower_confidence_bound"]


def lower_confidence_bound(count, n: int, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound on a probability.

    This is the lower end of the two-sided exact (Clopper-Pearson) interval
    at level ``1 - 2 * alpha``, as in Cohen et al.'s ``CERTIFY``
    (``proportion_confint(count, n, alpha=2 * alpha, method="beta")[0]``):
    ``Beta(alpha; count, n - count + 1)``, and 0 where ``count == 0``.

    Args:
        count: successes (int or array of ints) in ``[0, n]``.
        n: trials, ``>= 1``.
        alpha: the probability that the bound exceeds the true probability,
            in ``(0, 1)``.

    Returns:
        The bounds, a float64 array shaped like ``count``.

    Example:
        >>> lower_confidence_bound(1000, 1000, 0.001)   # 0.001 ** (1 / 1000)
        array(0.99311605)
    """
    count = np.asarray(count, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(alpha, count, n - count + 1)
    return np.where(count > 0, bound, 0.0)


def abstain_p_value(top: int, runner_up: int) -> float:
    """Two-sided binomial test p-value of ``top`` in ``top + runner_up`` at 1/2.

    ``PREDICT`` abstains when this exceeds ``alpha``: the data do not show
    that the top class is more likely than the runner-up.

    Args:
        top: draws of the most frequent class.
        runner_up: draws of the second most frequent class.

    Returns:
        The p-value (1.0 when both are 0).

    Example:
        >>> abstain_p_value(60, 40) > 0.001
        True
    """
    trials = int(top) + int(runner_up)
    if trials == 0:
        return 1.0
    return float(stats.binomtest(int(top), trials, 0.5).pvalue)


def certified_radius(p_lower, sigma: float) -> np.ndarray:
    """The certified L2 radius ``sigma * Phi^-1(p_lower)`` (0 where ``<= 1/2``).

    Args:
        p_lower: lower bounds on the top class's probability under noise.
        sigma: the noise's standard deviation.

    Returns:
        The radii, float64, shaped like ``p_lower``; 0 where ``p_lower <= 1/2``
        (no certificate: ``certify`` abstains there).

    Example:
        >>> certified_radius(0.99, 0.25)
        array(0.58158697)
    """
    p_lower = np.asarray(p_lower, dtype=np.float64)
    return np.where(p_lower > 0.5, sigma * stats.norm.ppf(p_lower), 0.0)
