"""Adversarial training: PGD (Madry et al. 2018) and TRADES (Zhang et al. 2019)."""

from __future__ import annotations

import keras
import torch
from keras import ops

from verinet._validation import check_int, check_number
from verinet.attacks import PGD as PGDAttack
from verinet.objectives._frozen import frozen_moving_statistics
from verinet.objectives.base import Objective, accuracy


def _attack(context, steps, step_size, restarts, loss):
    return PGDAttack(
        context.model,
        context.radius,
        steps=steps,
        step_size=step_size,
        restarts=restarts,
        norm=context.norm,
        input_range=context.input_range,
        loss=loss,
        seed=int(torch.randint(0, 2**31 - 1, ()).item()),
    )


def _step_size(owner, step_size):
    """``None`` (the default) or a finite step length > 0."""
    return check_number(
        f"{owner} step_size", step_size, low=0, low_open=True, allow_none=True
    )


@keras.saving.register_keras_serializable(package="verinet")
class PGD(Objective):
    """Train on PGD adversarial examples (cross-entropy attack).

    Args:
        steps: attack steps per training step, an int >= 1.
        step_size: attack step, a number > 0 (default ``2.5 * epsilon / steps``).
        restarts: attack restarts, an int >= 1.

    Raises:
        InvalidInputError: for a bool, float or value below 1 as ``steps`` or
            ``restarts``, or a ``step_size`` that is not a finite number > 0.

    Example:
        >>> model.compile("adam", robust="pgd", epsilon=0.1, input_range=(0, 1))
    """

    name = "pgd"
    integer_labels = True
    metric_names = ("adversarial_accuracy",)

    def __init__(
        self, steps: int = 10, step_size: float | None = None, restarts: int = 1
    ):
        self.steps = check_int("PGD steps", steps)
        self.step_size = _step_size("PGD", step_size)
        self.restarts = check_int("PGD restarts", restarts)

    def compute(self, context, x, y, y_pred):
        attack = _attack(context, self.steps, self.step_size, self.restarts, "ce")
        x_adv = attack.perturb_tensor(x, y)
        with frozen_moving_statistics(context.model):
            adv_logits = context.model(x_adv, training=context.training)
        return context.loss(adv_logits), {
            "adversarial_accuracy": accuracy(adv_logits, y)
        }

    def get_config(self):
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "restarts": self.restarts,
        }


@keras.saving.register_keras_serializable(package="verinet")
class TRADES(Objective):
    """Clean loss + ``beta`` · KL(clean ‖ adversarial) (Zhang et al. 2019).

    The adversarial input maximizes the KL divergence from the clean
    prediction inside the perturbation set.

    Args:
        beta: weight of the robustness (KL) term, a finite number >= 0.
        steps: attack steps, an int >= 1.
        step_size: attack step, a number > 0 (default ``2.5 * epsilon / steps``).

    Raises:
        InvalidInputError: for a ``beta``, ``steps`` or ``step_size`` outside
            those ranges (NaN, infinities and bools included).

    Example:
        >>> model.compile("adam", robust=vn.objectives.TRADES(beta=6.0), epsilon=0.1)
    """

    name = "trades"
    integer_labels = True
    metric_names = ("adversarial_accuracy",)

    def __init__(
        self, beta: float = 6.0, steps: int = 10, step_size: float | None = None
    ):
        self.beta = check_number("TRADES beta", beta, low=0)
        self.steps = check_int("TRADES steps", steps)
        self.step_size = _step_size("TRADES", step_size)

    def compute(self, context, x, y, y_pred):
        with torch.no_grad():
            clean_eval = torch.log_softmax(context.model(x, training=False), dim=-1)

        def kl_from_clean(logits, _labels):
            log_adv = torch.log_softmax(logits, dim=-1)
            return (clean_eval.exp() * (clean_eval - log_adv)).sum(dim=-1)

        attack = _attack(context, self.steps, self.step_size, 1, kl_from_clean)
        x_adv = attack.perturb_tensor(x, y)
        with frozen_moving_statistics(context.model):
            adv_logits = context.model(x_adv, training=context.training)
        log_clean = torch.log_softmax(y_pred, dim=-1)
        log_adv = torch.log_softmax(adv_logits, dim=-1)
        # Per-sample KL, reduced with the batch's sample (and class) weights
        # as the clean loss is.
        kl = context.reduce(
            ops.sum(ops.exp(log_clean) * (log_clean - log_adv), axis=-1)
        )
        loss = context.loss(y_pred) + self.beta * kl
        return loss, {"adversarial_accuracy": accuracy(adv_logits, y)}

    def get_config(self):
        return {"beta": self.beta, "steps": self.steps, "step_size": self.step_size}
