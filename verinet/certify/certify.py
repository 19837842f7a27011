"""``certify()``: sort every sample into verified, falsified or unknown."""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import ops

from verinet._validation import check_batch_size, check_choice, check_x, check_y
from verinet.attacks import FGSM, PGD
from verinet.bounds.api import (
    bound_batches,
    make_perturbation,
    margin_spec,
    resolve_method,
)
from verinet.bounds.graph import BoundGraph
from verinet.bounds.precision import ieee_float32
from verinet.certify.report import CertificationReport
from verinet.errors import SoundnessError, UnsupportedLayerError

_ATTACKS = {"pgd": PGD, "fgsm": FGSM, None: None}


def _bound_model(model):
    """The model itself if it has bound rules, else its ``vn.convert`` twin."""
    try:
        BoundGraph(model)
        return model
    except UnsupportedLayerError:
        from verinet.models.convert import convert

        return convert(model)


def _make_attack(attack, model, epsilon, norm, input_range, options):
    if attack is None or not isinstance(attack, str):
        return attack
    name = check_choice("attack", attack, ("pgd", "fgsm"))
    if name == "pgd":
        defaults = {"steps": 30, "restarts": 2}
        return PGD(
            model,
            epsilon,
            norm=norm,
            input_range=input_range,
            **{**defaults, **(options or {})},
        )
    return FGSM(model, epsilon, norm=norm, input_range=input_range, **(options or {}))


def _in_set(x_adv, x, epsilon, norm, input_range, tol=1e-5):
    delta = (x_adv - x).reshape(len(x), -1)
    size = (
        np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    )
    ok = size <= epsilon * (1 + tol) + tol
    if input_range is not None:
        flat = x_adv.reshape(len(x), -1)
        ok &= (flat.min(axis=1) >= input_range[0] - tol) & (
            flat.max(axis=1) <= input_range[1] + tol
        )
    return ok


def certify(
    model,
    x,
    y,
    epsilon,
    method="crown",
    attack="pgd",
    norm="linf",
    input_range=None,
    batch_size=256,
    verbose="auto",
    dtype=None,
    attack_options=None,
) -> CertificationReport:
    """Prove or refute robustness of each sample.

    A sample is **verified** when the bound method proves every input within
    ``epsilon`` keeps the correct label, **falsified** when the clean input is
    misclassified or the attack finds a real adversarial example (returned in
    the report), and **unknown** otherwise. The attack runs on verified
    samples too: if it ever breaks one, the bound is wrong and
    ``SoundnessError`` is raised.

    Args:
        model: a Keras model of verinet layers, or a stock Keras model that
            ``vn.convert`` can map.
        x: inputs ``(n, *input_shape)``.
        y: integer labels ``(n,)``.
        epsilon: perturbation radius in input units.
        method: ``"ibp"``, ``"crown"``, ``"crown-ibp"`` or a method object.
        attack: ``"pgd"``, ``"fgsm"``, an attack object with
            ``perturb(x, y)``, or ``None``.
        norm: ``"linf"`` or ``"l2"``.
        input_range: optional ``(low, high)`` valid input box.
        batch_size: samples bounded at a time.
        verbose: ``"auto"``, 0 or 1 (a Keras progress bar).
        dtype: ``"float32"`` or ``"float64"`` for the bounds.
        attack_options: keyword arguments for the attack (e.g. ``steps``).

    Returns:
        A ``CertificationReport``.

    Example:
        >>> report = vn.certify(model, x_test, y_test, epsilon=0.05)
        >>> print(report.summary())
    """
    start = time.perf_counter()
    x = check_x(model, x).astype(np.float32, copy=False)
    classes = model.outputs[0].shape[-1]
    y = check_y(y, len(x), classes)
    perturbation = make_perturbation(epsilon, norm, input_range, x)
    bound_method = resolve_method(method)
    model = _bound_model(model)
    attacker = _make_attack(
        attack,
        model,
        perturbation.epsilon,
        perturbation.norm,
        perturbation.input_range,
        attack_options,
    )
    batch_size = check_batch_size(batch_size) or len(x)
    batches = range(0, len(x), batch_size)
    show = (len(batches) > 1) if verbose == "auto" else bool(verbose)
    bar = keras.utils.Progbar(len(x), verbose=1 if show else 0, unit_name="sample")

    margins, predictions, adversarial, broken = [], [], [], []
    with ieee_float32():  # no TF32 in bounds, attacks or verdicts
        for offset in batches:
            xb, yb = x[offset : offset + batch_size], y[offset : offset + batch_size]
            logits = ops.convert_to_numpy(model(xb, training=False))
            predictions.append(logits.argmax(axis=1))
            low, _ = bound_batches(
                model,
                xb,
                perturbation,
                bound_method,
                margin_spec(yb, classes),
                upper=False,
                dtype=dtype,
            )
            low[np.arange(len(yb)), yb] = np.inf
            margins.append(low)
            adv = np.full_like(xb, np.nan)
            hit = np.zeros(len(xb), dtype=bool)
            if attacker is not None:
                candidate = np.asarray(attacker.perturb(xb, yb), dtype=np.float32)
                adv_logits = model(candidate, training=False)
                adv_pred = ops.convert_to_numpy(adv_logits).argmax(axis=1)
                hit = (adv_pred != yb) & _in_set(
                    candidate,
                    xb,
                    perturbation.epsilon,
                    perturbation.norm,
                    perturbation.input_range,
                )
                adv[hit] = candidate[hit]
            adversarial.append(adv)
            broken.append(hit)
            bar.add(len(xb))

    predictions = np.concatenate(predictions)
    margin_lower = np.concatenate(margins)
    adversarial = np.concatenate(adversarial)
    attacked = np.concatenate(broken)
    correct = predictions == y
    proven = correct & np.all(margin_lower > 0, axis=1)
    if np.any(proven & attacked):
        bad = np.flatnonzero(proven & attacked)
        raise SoundnessError(
            f"Soundness bug: {bound_method.name} verified samples {bad[:10].tolist()} "
            "but the attack found adversarial examples for them. Please report it "
            "with the model and inputs."
        )
    misclassified = ~correct
    adversarial[misclassified] = x[misclassified]
    falsified = misclassified | attacked
    verified = proven
    unknown = ~(verified | falsified)
    return CertificationReport(
        verified=verified,
        falsified=falsified,
        unknown=unknown,
        margin_lower=margin_lower,
        adversarial_examples=adversarial,
        labels=y,
        predictions=predictions,
        epsilon=perturbation.epsilon,
        method=bound_method.name,
        norm=perturbation.norm,
        input_range=perturbation.input_range,
        attack=attack
        if isinstance(attack, str) or attack is None
        else type(attack).__name__,
        seconds=time.perf_counter() - start,
    )
