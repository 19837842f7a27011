"""The objective interface: a robust loss that plugs into Keras's trainer."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops


@dataclass
class Context:
    """What an objective sees at one step.

    Attributes:
        model: the model being trained.
        epsilon: the current (scheduled) perturbation radius.
        epoch: fractional epoch (``epoch + batch / steps``).
        norm: ``"linf"`` or ``"l2"``.
        input_range: ``(low, high)`` or ``None``.
        loss: ``loss(y_pred)`` — the compiled loss on the batch's labels and
            sample weights.
        training: ``True`` in ``fit``'s train step.
        graph: the model's bound graph (bound-based objectives only).
        sample_weight: the batch's sample weights, or ``None``.
        epsilon_target: the radius the schedule ends at (``None``: the
            current ``epsilon`` is the target).
        epsilon_profile: ``None``, or for a per-feature epsilon each
            feature's radius divided by the largest (``radius`` is then
            ``epsilon * epsilon_profile``).
    """

    model: Any
    epsilon: float
    epoch: float
    norm: str
    input_range: tuple | None
    loss: Callable
    training: bool
    graph: Any = None
    sample_weight: Any = None
    epsilon_target: float | None = None
    epsilon_profile: Any = None

    @property
    def radius(self):
        """This step's radius: ``epsilon``, or per feature ``epsilon *
        epsilon_profile`` (an array of the input shape)."""
        if self.epsilon_profile is None:
            return self.epsilon
        return self.epsilon * self.epsilon_profile

    @property
    def perturbation(self):
        """The threat model of this step: ``norm``'s ball of ``radius``
        clipped to ``input_range`` (a ``vn.bounds`` perturbation)."""
        from verinet.bounds.perturbation import NORMS

        return NORMS[self.norm](self.radius, self.input_range)

    @property
    def ramp_progress(self) -> float:
        """How far the epsilon ramp has come: ``epsilon / epsilon_target`` in
        ``[0, 1]`` (1 once the target is reached, or when it is 0)."""
        target = self.epsilon if self.epsilon_target is None else self.epsilon_target
        if target <= 0:
            return 1.0
        return min(float(self.epsilon) / float(target), 1.0)

    def reduce(self, per_sample):
        """Average per-sample losses as Keras's default reduction does."""
        if self.sample_weight is not None:
            weights = ops.cast(ops.reshape(self.sample_weight, (-1,)), per_sample.dtype)
            return ops.sum(per_sample * weights) / per_sample.shape[0]
        return ops.mean(per_sample)


class _EarlierName:
    """A read-only alias of another attribute, on the class and on instances."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj, owner=None):
        return getattr(owner if obj is None else obj, self.name)


class Objective:
    """Base class of robust training objectives.

    Subclasses implement ``compute(context, x, y, y_pred)`` returning
    ``(loss, metrics)`` where ``metrics`` maps History names
    (``"verified_accuracy"``, ``"adversarial_accuracy"``) to per-sample
    values (one per row of the batch), which the History trackers average
    over every sample of the epoch.
    ``requires_bounds`` marks objectives that need every layer's bound rule
    (only those build the model's bound graph, so the others accept layers
    without one); ``uses_epsilon`` is ``False`` for plain training, which
    then runs as Keras's own; ``integer_labels`` marks objectives that read
    ``y`` as class indices (``fit`` then checks the labels whatever the
    loss).
    """

    name = "objective"
    requires_bounds = False
    uses_epsilon = True
    integer_labels = False
    metric_names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "needs_bounds" in cls.__dict__:  # the attribute's earlier name
            warnings.warn(
                f"{cls.__name__}.needs_bounds is deprecated; set "
                "requires_bounds instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.requires_bounds = bool(cls.__dict__["needs_bounds"])
            del cls.needs_bounds

    needs_bounds = _EarlierName("requires_bounds")

    def compute(self, context: Context, x, y, y_pred):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        restored = {
            k: keras.saving.deserialize_keras_object(v)
            if isinstance(v, dict) and "class_name" in v
            else v
            for k, v in config.items()
        }
        return cls(**restored)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def accuracy(logits, y):
    """Per row 1.0 where the argmax is the label, else 0.0 (a metric tracker
    then averages over samples, not over batch means)."""
    return ops.cast(ops.argmax(logits, axis=-1) == ops.cast(y, "int64"), "float32")


def serialize_value(value):
    """Schedules serialize as Keras objects; numbers pass through."""
    from verinet.schedules.schedules import Schedule

    if isinstance(value, Schedule):
        return keras.saving.serialize_keras_object(value)
    return value
