"""``vn.refine``: train, verify, analyze, retrain.

Each round certifies the training samples, weights the ones no bound could
prove (and adds the attack's counterexamples as extra samples), fine-tunes
with the model's own ``fit`` and compile objective, and certifies the
validation data. The best round's weights are kept.
"""

from __future__ import annotations

import time

import numpy as np

from verinet._validation import (
    check_batch_size,
    check_choice,
    check_int,
    check_number,
    check_x,
    check_y,
)
from verinet.callbacks._target import check_target_epsilon, target_settings
from verinet.certify import certify
from verinet.errors import InvalidInputError

#: The per-round lists of ``refine``'s history, in order.
ROUND_KEYS = (
    "round",
    "val_certified_accuracy",
    "val_attack_accuracy",
    "train_unknown",
    "train_falsified",
    "counterexamples_added",
    "seconds",
)


def refine(
    model,
    x,
    y,
    validation_data,
    epsilon=None,
    rounds: int = 5,
    patience: int = 2,
    method="crown",
    epochs_per_round: int = 1,
    weight: float = 4.0,
    certify_size: int | None = None,
    attack="pgd",
    norm: str | None = None,
    input_range=None,
    batch_size: int = 64,
    certify_batch_size: int = 256,
    seed: int | None = 0,
    verbose: int = 1,
) -> dict:
    """Fine-tune a model on the samples its certificate does not cover.

    Before the first round the validation data is certified (round 0, the
    weights as given). Then each round:

    1. certifies the training samples (all, or ``certify_size`` of them
       drawn at random) at ``epsilon`` with ``method`` and ``attack``;
    2. gives every unknown or falsified sample the sample weight ``weight``
       (verified and uncertified samples keep 1);
    3. appends the attack's counterexamples (those of correctly classified
       samples; a misclassified input is already in the data) with their
       true labels and sample weight ``weight``;
    4. trains with ``model.fit(..., sample_weight=...)`` for
       ``epochs_per_round`` epochs: the model keeps its compile objective
       (e.g. ``robust="ibp"``, whose loss applies the sample weights) and
       its epsilon schedule continues where it stood;
    5. certifies ``validation_data``.

    It stops after ``rounds`` rounds, or once the validation verified
    accuracy has not improved (strictly) on the best so far for
    ``patience`` rounds in a row, and then restores the weights of the best
    round (round 0 when no round improved). The weights include batch-norm
    statistics; the optimizer's state is not restored.

    Args:
        model: a compiled verinet (or stock Keras) model.
        x: training inputs ``(n, *input_shape)``.
        y: integer labels ``(n,)``.
        validation_data: ``(x_val, y_val)``.
        epsilon: radius to certify at (or per-feature radii); default the
            target epsilon of ``compile(robust=...)``.
        rounds: most rounds to run (an int >= 1).
        patience: rounds without improvement before stopping (an int >= 1).
        method: bound method, as in ``vn.certify``.
        epochs_per_round: ``fit`` epochs per round (an int >= 1).
        weight: sample weight of unknown and falsified samples and of the
            counterexamples (a finite number > 0).
        certify_size: training samples certified per round (``None``: all).
        attack: as in ``vn.certify``; ``None`` adds no counterexamples.
        norm: ``"linf"`` or ``"l2"``; default compile's norm.
        input_range: ``(low, high)``; default compile's input range.
        batch_size: ``fit``'s batch size.
        certify_batch_size: samples bounded at a time when certifying.
        seed: seeds the choice of the ``certify_size`` samples.
        verbose: 0 silent, 1 one line per round, 2 also ``fit``'s lines.

    Returns:
        A dict in the manner of Keras's ``History.history``: one list per
        key of ``ROUND_KEYS`` (``round``, ``val_certified_accuracy``,
        ``val_attack_accuracy``, ``train_unknown``, ``train_falsified``,
        ``counterexamples_added``, ``seconds``), one entry per round run;
        ``initial_val_certified_accuracy`` and
        ``initial_val_attack_accuracy`` (round 0); ``best_round`` (0 for the
        weights as given), ``best_val_certified_accuracy``, ``epsilon`` and
        ``method``.

    Raises:
        InvalidInputError: for a model that is not compiled, bad
            ``rounds``/``patience``/``epochs_per_round``/``weight``/
            ``certify_size``, data that does not fit the model (shapes,
            labels, NaN), or no epsilon for a model compiled without a
            robust objective.

    Example:
        >>> model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
        >>> model.fit(x_train, y_train, epochs=10)
        >>> history = vn.refine(model, x_train, y_train, (x_val, y_val), rounds=5)
        >>> history["best_round"], history["best_val_certified_accuracy"]
    """
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise InvalidInputError(
            f"refine trains with fit: model {getattr(model, 'name', model)!r} is "
            "not compiled. Call model.compile(optimizer, robust=..., epsilon=...) "
            "first."
        )
    rounds = check_int("rounds", rounds)
    patience = check_int("patience", patience)
    epochs_per_round = check_int("epochs_per_round", epochs_per_round)
    weight = check_number("weight", weight, low=0, low_open=True)
    batch_size = check_batch_size(batch_size)
    verbose = check_choice("verbose", verbose, (0, 1, 2))
    classes = model.outputs[0].shape[-1]
    x = check_x(model, x).astype(np.float32, copy=False)
    y = check_y(y, len(x), classes)
    x_val, y_val = _validation(model, validation_data, classes)
    if certify_size is not None:
        certify_size = min(check_int("certify_size", certify_size), len(x))
    epsilon, norm, input_range = target_settings(
        model, check_target_epsilon(epsilon), norm, input_range, "refine"
    )
    options = dict(
        method=method,
        attack=attack,
        norm=norm,
        input_range=input_range,
        batch_size=certify_batch_size,
        verbose=0,
    )
    rng = np.random.default_rng(seed)

    start = time.perf_counter()
    initial = certify(model, x_val, y_val, epsilon, **options)
    history = {key: [] for key in ROUND_KEYS}
    history.update(
        initial_val_certified_accuracy=initial.verified_accuracy,
        initial_val_attack_accuracy=initial.attack_accuracy,
    )
    best_round, best, best_weights = 0, initial.verified_accuracy, model.get_weights()
    _say(verbose, f"Round 0: val certified {best:.4f} (weights as given)")
    waited = 0
    for number in range(1, rounds + 1):
        tick = time.perf_counter()
        chosen = (
            np.arange(len(x))
            if certify_size is None
            else np.sort(rng.choice(len(x), certify_size, replace=False))
        )
        report = certify(model, x[chosen], y[chosen], epsilon, **options)
        x_fit, y_fit, w_fit, added = _weighted_data(x, y, chosen, report, weight)
        model.fit(
            x_fit,
            y_fit,
            sample_weight=w_fit,
            epochs=epochs_per_round,
            batch_size=batch_size,
            verbose=0 if verbose < 2 else 2,
        )
        val = certify(model, x_val, y_val, epsilon, **options)
        values = (
            number,
            val.verified_accuracy,
            val.attack_accuracy,
            int(report.unknown.sum()),
            int(report.falsified.sum()),
            added,
            time.perf_counter() - tick,
        )
        for key, value in zip(ROUND_KEYS, values, strict=True):
            history[key].append(value)
        _say(
            verbose,
            f"Round {number}: val certified {val.verified_accuracy:.4f}, attack "
            f"{val.attack_accuracy:.4f}; train unknown {values[3]}, falsified "
            f"{values[4]}, {added} counterexamples added ({values[6]:.1f} s)",
        )
        if val.verified_accuracy > best:
            best_round, best = number, val.verified_accuracy
            best_weights = model.get_weights()
            waited = 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.set_weights(best_weights)
    _say(
        verbose,
        f"Best round {best_round}: val certified {best:.4f} "
        f"({time.perf_counter() - start:.1f} s in all)",
    )
    history.update(
        best_round=best_round,
        best_val_certified_accuracy=best,
        epsilon=epsilon,
        method=initial.method,
    )
    return history


def _validation(model, validation_data, classes):
    """``(x_val, y_val)`` checked against the model."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise InvalidInputError(
            "validation_data must be a pair (x_val, y_val), got "
            f"{type(validation_data).__name__}"
            + (
                f" of length {len(validation_data)}"
                if isinstance(validation_data, (tuple, list))
                else ""
            )
            + "."
        )
    x_val = check_x(model, validation_data[0], "validation_data x")
    return x_val, check_y(validation_data[1], len(x_val), classes)


def _weighted_data(x, y, chosen, report, weight):
    """Training data of one round: ``(x, y, sample_weight, counterexamples)``.

    The certified samples ``chosen`` that are not verified get ``weight``;
    the attack's counterexamples (of correctly classified samples) follow
    the training data with their true labels and ``weight``.
    """
    sample_weight = np.ones(len(x), dtype=np.float32)
    sample_weight[chosen[~report.verified]] = weight
    index, points = report.counterexamples()
    found = report.predictions[index] == report.labels[index]
    extra_x = points[found].astype(np.float32)
    extra_y = report.labels[index[found]]
    added = len(extra_x)
    return (
        np.concatenate([x, extra_x]),
        np.concatenate([y, extra_y]),
        np.concatenate([sample_weight, np.full(added, weight, dtype=np.float32)]),
        added,
    )


def _say(verbose: int, text: str) -> None:
    if verbose:
        print(text, flush=True)
