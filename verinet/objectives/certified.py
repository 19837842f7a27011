"""Certified training: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020).

Both minimize ``kappa * loss(clean) + (1 - kappa) * loss(worst-case logits)``
where the worst-case logits are ``-(lower bound of f_y - f_j)`` for every
class ``j`` (0 for ``j = y``), an upper bound on the loss over the
perturbation set.
"""

from __future__ import annotations

import keras
from keras import ops

from verinet._validation import check_number
from verinet.bounds.batch_statistics import with_batch_statistics
from verinet.bounds.methods import IBP as IBPBounds
from verinet.bounds.methods import CROWNOutput, IntervalHidden, IntervalOutput
from verinet.errors import InvalidInputError
from verinet.objectives.base import Objective, serialize_value
from verinet.schedules.schedules import Schedule, check_schedule


def margin_spec_tensor(y, classes, dtype):
    """``C[b, j] = e_y - e_j`` as a tensor ``(batch, classes, classes)``."""
    onehot = ops.one_hot(ops.cast(y, "int32"), classes, dtype=dtype)
    return onehot[:, None, :] - ops.eye(classes, dtype=dtype)[None]


def _verified_rows(lower, y):
    """Per sample: every margin bound ``f_y - f_j`` (j != y) is positive."""
    onehot = ops.one_hot(ops.cast(y, "int32"), lower.shape[-1], dtype=lower.dtype)
    others = ops.where(onehot > 0, ops.ones_like(lower), lower)
    return ops.all(others > 0, axis=-1)


def _verified(lower, y, classes):
    """Per sample 1.0 (verified) or 0.0: the History metric averages these
    over every sample of the epoch, not batch means."""
    return ops.cast(_verified_rows(lower, y), "float32")


def _schedule_value(value, context) -> float:
    if isinstance(value, Schedule):
        return float(value(context.epoch))
    return value


def _check_mix(owner: str, name: str, value):
    """A mixing weight: ``None`` (the default), a number or a schedule in [0, 1].

    Args:
        owner: the objective's class name, for the message.
        name: ``"kappa"`` or ``"beta"``.
        value: the argument.

    Returns:
        ``None``, a float or the schedule.

    Raises:
        InvalidInputError: for a bool, NaN, a value outside [0, 1], or a
            schedule that can leave [0, 1] or lacks its ``end``/``ramp_epochs``.

    Example:
        >>> _check_mix("IBP", "kappa", 0.5)
        0.5
    """
    if value is None:
        return None
    if isinstance(value, Schedule):
        return check_schedule(value, f"{owner} {name}", low=0, high=1, complete=True)
    try:
        return check_number(f"{owner} {name}", value, low=0, high=1)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"{exc} Pass a number in [0, 1], a vn.schedules schedule, or None "
            "for the default."
        ) from None


class _Certified(Objective):
    requires_bounds = True
    integer_labels = True
    metric_names = ("verified_accuracy",)

    def __init__(self, kappa=None):
        self.kappa = _check_mix(type(self).__name__, "kappa", kappa)

    def _kappa(self, context):
        if self.kappa is None:
            # Follows the epsilon ramp: 1 at epsilon 0, 0.5 at the target.
            return 1.0 - 0.5 * context.ramp_progress
        return _schedule_value(self.kappa, context)

    def margin_lower(self, context, graph, x, perturbation, C):
        raise NotImplementedError

    def compute(self, context, x, y, y_pred):
        classes = y_pred.shape[-1]
        graph = context.graph
        if context.training:
            graph = with_batch_statistics(graph, ops.cast(x, y_pred.dtype))
        perturbation = context.perturbation
        C = margin_spec_tensor(y, classes, y_pred.dtype)
        x = ops.cast(x, y_pred.dtype)
        loss, verified = self.robust_loss(context, graph, x, perturbation, C, y)
        kappa = self._kappa(context)
        if kappa > 0:
            loss = kappa * context.loss(y_pred) + (1.0 - kappa) * loss
        return loss, {"verified_accuracy": verified}

    def robust_loss(self, context, graph, x, perturbation, C, y):
        """The loss on the worst-case logits and the verified fraction."""
        lower = self.margin_lower(context, graph, x, perturbation, C)
        return context.loss(-lower), _verified(lower, y, C.shape[-1])

    def get_config(self):
        return {"kappa": serialize_value(self.kappa)}


@keras.saving.register_keras_serializable(package="verinet")
class IBP(_Certified):
    """Interval bound propagation training.

    Args:
        kappa: weight of the clean loss, a number or a schedule (with its
            ``end`` and ``ramp_epochs`` set) in [0, 1]; by default it follows
            the epsilon ramp from 1 down to 0.5.

    Raises:
        InvalidInputError: for a ``kappa`` that can leave [0, 1].

    Example:
        >>> model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
    """

    name = "ibp"

    def margin_lower(self, context, graph, x, perturbation, C):
        return IBPBounds().bounds(graph, x, perturbation, C, upper=False)[0]


@keras.saving.register_keras_serializable(package="verinet")
class CROWNIBP(_Certified):
    """CROWN-IBP training: ``beta`` · CROWN-IBP + (1 - ``beta``) · IBP margins.

    Its name is ``"crown-ibp"`` (``compile(robust="crown-ibp")``; ``"crown"``
    is accepted as an alias). It trains with CROWN-IBP bounds; certify such a
    model with any method, e.g. ``certify(method="crown")`` (full CROWN).

    Args:
        beta: mix of the CROWN-IBP bound, a number or a schedule (with its
            ``end`` and ``ramp_epochs`` set) in [0, 1]; by default 1 at the
            start of the epsilon ramp, falling linearly to 0 at its end
            (Zhang et al. 2020).
        kappa: weight of the clean loss, as for ``IBP``.

    Raises:
        InvalidInputError: for a ``beta`` or ``kappa`` that can leave [0, 1].

    Example:
        >>> model.compile("adam", robust="crown-ibp", epsilon=0.1, input_range=(0, 1))
    """

    name = "crown-ibp"

    def __init__(self, beta=None, kappa=None):
        super().__init__(kappa)
        self.beta = _check_mix("CROWNIBP", "beta", beta)

    def _beta(self, context):
        if self.beta is None:
            return 1.0 - context.ramp_progress
        return _schedule_value(self.beta, context)

    def margin_lower(self, context, graph, x, perturbation, C):
        # CROWN-IBP: IBP's hidden-layer bounds, shared by both output bounds.
        bounds = IntervalHidden().node_bounds(graph, x, perturbation)
        args = (graph, bounds, x, perturbation, C)
        ibp_lower = IntervalOutput().bounds(*args, upper=False)[0]
        beta = self._beta(context)
        if beta <= 0:
            return ibp_lower
        crown_lower = CROWNOutput().bounds(*args, upper=False)[0]
        return beta * crown_lower + (1.0 - beta) * ibp_lower

    def robust_loss(self, context, graph, x, perturbation, C, y):
        if not _is_logits_cross_entropy(context.model.loss):
            return super().robust_loss(context, graph, x, perturbation, C, y)
        return self._fused_loss(context, graph, x, perturbation, C, y)

    def _fused_loss(self, context, graph, x, perturbation, C, y):
        """Loss fusion (Xu et al. 2020): bound the cross-entropy as one output.

        With margins ``m_j = z_j - z_y`` the loss is ``log sum_j exp(m_j)``.
        ``exp`` lies below its chord on the IBP interval of each ``m_j``, so a
        single CROWN pass bounds ``S = sum_j exp(m_j)`` above by ``S_max`` and
        ``log S_max`` bounds the worst-case loss: one specification row
        instead of one per class. ``S_max < 2`` proves every margin positive.
        """
        bounds = IntervalHidden().node_bounds(graph, x, perturbation)
        # IBP bounds of C z = z_y - z_j; the margins m = -C z.
        c_low, c_up = IntervalOutput().bounds(graph, bounds, x, perturbation, C)
        m_low, m_up = -c_up, -c_low
        ibp_loss = ops.logsumexp(m_up, axis=-1)
        ibp_verified = _verified(c_low, y, C.shape[-1])
        beta = self._beta(context)
        if beta <= 0:
            return context.reduce(ibp_loss), ibp_verified
        e_low, e_up = ops.exp(m_low), ops.exp(m_up)
        width = m_up - m_low
        wide = width > 1e-6
        slope = ops.where(wide, (e_up - e_low) / ops.where(wide, width, 1.0), e_up)
        intercept = e_up - slope * m_up
        spec = -ops.expand_dims(ops.einsum("bj,bjk->bk", slope, C), 1)
        _, crown_up = CROWNOutput().bounds(
            graph, bounds, x, perturbation, spec, lower=False
        )
        total = ops.maximum(crown_up[:, 0] + ops.sum(intercept, axis=-1), 1.0)
        fused = ops.log(total)
        verified = ops.cast(
            ops.logical_or(total < 2.0, _verified_rows(c_low, y)), "float32"
        )
        loss = beta * fused + (1.0 - beta) * ibp_loss
        return context.reduce(loss), verified

    def get_config(self):
        return {**super().get_config(), "beta": serialize_value(self.beta)}


def _is_logits_cross_entropy(loss) -> bool:
    """The default loss (sparse cross-entropy on logits), where fusion applies."""
    if not isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return False
    config = loss.get_config()
    return (
        config.get("from_logits")
        and config.get("ignore_class") is None
        and config.get("reduction") == "sum_over_batch_size"
    )
