"""Certified training: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020).

Both minimize ``kappa * loss(clean) + (1 - kappa) * loss(worst-case logits)``
where the worst-case logits are ``-(lower bound of f_y - f_j)`` for every
class ``j`` (0 for ``j = y``), an upper bound on the loss over the
perturbation set.
"""

from __future__ import annotations

import keras
from keras import ops

from verinet.bounds.batch_statistics import with_batch_statistics
from verinet.bounds.methods import backward_pass, ibp_spec_bounds, interval_pass
from verinet.bounds.perturbation import NORMS
from verinet.objectives.base import Objective, serialize_value
from verinet.schedules.schedules import Schedule, resolve_schedule


def margin_spec_tensor(y, classes, dtype):
    """``C[b, j] = e_y - e_j`` as a tensor ``(batch, classes, classes)``."""
    onehot = ops.one_hot(ops.cast(y, "int32"), classes, dtype=dtype)
    return onehot[:, None, :] - ops.eye(classes, dtype=dtype)[None]


def _verified(lower, y, classes):
    onehot = ops.one_hot(ops.cast(y, "int32"), classes, dtype=lower.dtype)
    others = ops.where(onehot > 0, ops.ones_like(lower), lower)
    return ops.mean(ops.cast(ops.all(others > 0, axis=-1), "float32"))


def _schedule_value(schedule: Schedule, context) -> float:
    return float(schedule(context.epoch))


class _Certified(Objective):
    needs_bounds = True
    metric_names = ("verified_accuracy",)

    def __init__(self, kappa=None):
        self.kappa = kappa

    def _kappa(self, context):
        if self.kappa is None:
            # Follows the epsilon ramp: 1 at epsilon 0, 0.5 at the target.
            target = context.model._robust.epsilon_target
            progress = context.epsilon / target if target > 0 else 1.0
            return 1.0 - 0.5 * min(progress, 1.0)
        return _schedule_value(resolve_schedule(self.kappa, "kappa"), context)

    def margin_lower(self, context, graph, x, perturbation, C):
        raise NotImplementedError

    def compute(self, context, x, y, y_pred):
        classes = y_pred.shape[-1]
        graph = context.graph
        if context.training:
            graph = with_batch_statistics(graph, ops.cast(x, y_pred.dtype))
        perturbation = NORMS[context.norm](context.epsilon, context.input_range)
        C = margin_spec_tensor(y, classes, y_pred.dtype)
        lower = self.margin_lower(
            context, graph, ops.cast(x, y_pred.dtype), perturbation, C
        )
        kappa = self._kappa(context)
        loss = context.loss(-lower)
        if kappa > 0:
            loss = kappa * context.loss(y_pred) + (1.0 - kappa) * loss
        return loss, {"verified_accuracy": _verified(lower, y, classes)}

    def get_config(self):
        return {"kappa": serialize_value(self.kappa)}


@keras.saving.register_keras_serializable(package="verinet")
class IBP(_Certified):
    """Interval bound propagation training.

    Args:
        kappa: weight of the clean loss, a number or a schedule; by default
            it follows the epsilon ramp from 1 down to 0.5.

    Example:
        >>> model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
    """

    name = "ibp"

    def margin_lower(self, context, graph, x, perturbation, C):
        bounds = interval_pass(graph, x, perturbation)
        return ibp_spec_bounds(graph, bounds, x, perturbation, C, upper=False)[0]


@keras.saving.register_keras_serializable(package="verinet")
class CROWNIBP(_Certified):
    """CROWN-IBP training: ``beta`` · CROWN-IBP + (1 - ``beta``) · IBP margins.

    Args:
        beta: mix of the CROWN-IBP bound, a number or a schedule; by default
            1 at the start of the epsilon ramp, falling linearly to 0 at its
            end (Zhang et al. 2020).
        kappa: weight of the clean loss, as for ``IBP``.

    Example:
        >>> model.compile("adam", robust="crown", epsilon=0.1, input_range=(0, 1))
    """

    name = "crown"

    def __init__(self, beta=None, kappa=None):
        super().__init__(kappa)
        self.beta = beta

    def _beta(self, context):
        if self.beta is None:
            target = context.model._robust.epsilon_target
            progress = context.epsilon / target if target > 0 else 1.0
            return 1.0 - min(progress, 1.0)
        return _schedule_value(resolve_schedule(self.beta, "beta"), context)

    def margin_lower(self, context, graph, x, perturbation, C):
        bounds = interval_pass(graph, x, perturbation)
        ibp_lower = ibp_spec_bounds(graph, bounds, x, perturbation, C, upper=False)[0]
        beta = self._beta(context)
        if beta <= 0:
            return ibp_lower
        crown_lower, _ = backward_pass(
            graph, graph.output, C, None, bounds, x, perturbation
        )
        return beta * crown_lower + (1.0 - beta) * ibp_lower

    def get_config(self):
        return {**super().get_config(), "beta": serialize_value(self.beta)}
