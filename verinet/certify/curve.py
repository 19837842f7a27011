"""``robustness_curve``: verified and attack accuracy over several radii."""

from __future__ import annotations

import keras

from verinet import distributed
from verinet._validation import check_vector


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

    values = check_vector("epsilons", epsilons, low=0.0).tolist()
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
