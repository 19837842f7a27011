"""``robustness_curve``: verified and attack accuracy over several radii."""

from __future__ import annotations

import keras
import numpy as np

from verinet import distributed
from verinet.errors import InvalidInputError


def _check_epsilons(epsilons) -> list[float]:
    try:
        values = np.asarray(epsilons, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"epsilons must be a list of numbers, got {epsilons!r}."
        ) from exc
    if values.ndim != 1 or values.size == 0:
        raise InvalidInputError(
            f"epsilons must be a non-empty 1-D list of radii, got shape {values.shape}."
        )
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise InvalidInputError(
            f"epsilons must be finite numbers >= 0; got {values[bad][0]!r} at "
            f"position {int(np.flatnonzero(bad)[0])}."
        )
    return values.tolist()


def robustness_curve(
    model,
    x,
    y,
    epsilons,
    method="crown",
    attack="pgd",
    norm="linf",
    input_range=None,
    batch_size=256,
    verbose="auto",
    dtype=None,
    attack_options=None,
) -> dict:
    """Verified and attack accuracy at each of several radii.

    Runs ``vn.certify`` once per epsilon over all samples (one bound pass per
    epsilon and batch, not per sample). Verified accuracy is a lower bound on
    robust accuracy at that radius, attack accuracy an upper bound. Under
    ``torchrun`` each ``certify`` call shares its batches out across the
    ranks, and every rank returns the same curve (see ``vn.distributed``).

    Args:
        model, x, y, method, attack, norm, input_range, batch_size, dtype,
            attack_options: as in ``vn.certify``.
        epsilons: the radii, numbers ``>= 0`` (in the order given).
        verbose: ``"auto"`` (a progress bar over the radii when there are
            more than one), 0 or 1.

    Returns:
        A dict: ``"epsilons"``, ``"verified_accuracy"``,
        ``"attack_accuracy"`` and ``"seconds"`` (lists, one entry per
        epsilon; ``"seconds"`` is each ``certify`` call's wall time),
        ``"clean_accuracy"``, ``"method"``, ``"norm"`` and ``"samples"``.

    Raises:
        InvalidInputError: for an empty, non-finite or negative epsilon list,
            and whatever ``vn.certify`` refuses.

    Example:
        >>> curve = vn.robustness_curve(model, x_test, y_test, [0.01, 0.02, 0.05])
        >>> curve["verified_accuracy"]
        [0.93, 0.81, 0.34]
    """
    from verinet.certify.certify import certify

    values = _check_epsilons(epsilons)
    show = len(values) > 1 if verbose == "auto" else bool(verbose)
    show = show and distributed.rank() == 0
    bar = keras.utils.Progbar(len(values), verbose=1 if show else 0, unit_name="eps")
    curve = {
        "epsilons": values,
        "verified_accuracy": [],
        "attack_accuracy": [],
        "seconds": [],
    }
    report = None
    for epsilon in values:
        report = certify(
            model,
            x,
            y,
            epsilon,
            method=method,
            attack=attack,
            norm=norm,
            input_range=input_range,
            batch_size=batch_size,
            verbose=0,
            dtype=dtype,
            attack_options=attack_options,
        )
        curve["verified_accuracy"].append(report.verified_accuracy)
        curve["attack_accuracy"].append(report.attack_accuracy)
        curve["seconds"].append(report.seconds)
        bar.add(1)
    curve["clean_accuracy"] = report.clean_accuracy
    curve["method"] = report.method
    curve["norm"] = report.norm
    curve["samples"] = report.num_samples
    return curve
