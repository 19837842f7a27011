"""``compile(robust=...)``: robust objectives inside Keras's own trainer.

The objective runs in ``compute_loss`` (which receives ``x``), so ``fit``,
callbacks, ``History``, checkpoints and progress bars are Keras's own. A
small callback keeps the fractional epoch that schedules read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
from keras import ops

from verinet import objectives
from verinet._validation import check_choice, check_input_range
from verinet.errors import InvalidInputError
from verinet.objectives.base import Context, serialize_value
from verinet.schedules.schedules import Schedule, resolve_schedule


@dataclass
class RobustState:
    """The robust configuration of a compiled model (not Keras-tracked)."""

    objective: objectives.Objective
    epsilon: Schedule
    epsilon_target: float
    norm: str
    input_range: tuple | None
    trackers: dict = field(default_factory=dict)
    epoch: float = 0.0
    graph: object = None

    def current_epsilon(self) -> float:
        return float(self.epsilon(self.epoch))


class ScheduleClock(keras.callbacks.Callback):
    """Tells the robust state the fractional epoch at every batch."""

    def __init__(self, state: RobustState):
        super().__init__()
        self.state = state
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.state.epoch = float(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        steps = self.params.get("steps") if self.params else None
        self.state.epoch = self._epoch + (batch / steps if steps else 0.0)

    def on_train_end(self, logs=None):
        self.state.epoch = float(self._epoch + 1)


def _epsilon_schedule(epsilon, epsilon_schedule, objective) -> tuple[Schedule, float]:
    """Resolve compile's epsilon arguments to ``(schedule, target)``."""
    if isinstance(epsilon, Schedule):
        if epsilon_schedule is not None:
            raise _config_error(
                "Give epsilon as a schedule or epsilon_schedule, not both."
            )
        schedule = epsilon
    else:
        target = resolve_schedule(epsilon, "epsilon").value
        if epsilon_schedule is not None:
            schedule = epsilon_schedule.with_end(target)
        elif objective.needs_bounds:
            from verinet.schedules import Linear

            schedule = Linear(end=target)  # ramps over half of fit's epochs
        else:
            schedule = resolve_schedule(target, "epsilon")
    target = schedule.end if hasattr(schedule, "end") else schedule.value
    return schedule, float(target if target is not None else 0.0)


def _config_error(message):
    """The error for bad compile arguments."""
    return InvalidInputError(message)


class RobustTrainingMixin:
    """Adds ``compile(robust=..., epsilon=...)`` to a Keras model."""

    _robust = None

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        robust="standard",
        epsilon=0.0,
        norm="linf",
        input_range=None,
        epsilon_schedule=None,
        **kwargs,
    ):
        """Configure training, with a robust objective.

        Args:
            optimizer: as in Keras.
            loss: a Keras loss; default sparse categorical cross-entropy on
                logits. Every objective uses it.
            metrics: as in Keras; default ``["accuracy"]`` (clean).
            robust: ``"standard"``, ``"pgd"``, ``"trades"``, ``"ibp"``,
                ``"crown"`` (CROWN-IBP), ``"smoothing"`` or a
                ``vn.objectives`` object.
            epsilon: target radius (number) or a ``vn.schedules`` schedule.
                For ``"ibp"``/``"crown"`` a number ramps linearly from 0 over
                the first half of ``fit``'s epochs unless
                ``epsilon_schedule`` says otherwise.
            norm: ``"linf"`` or ``"l2"``.
            input_range: valid input box ``(low, high)``, e.g. ``(0, 1)``.
            epsilon_schedule: a schedule whose unset ``end`` is ``epsilon``.
            **kwargs: options for a named objective (e.g. ``beta=6.0``,
                ``steps=10``), then Keras's own compile arguments.

        Example:
            >>> model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
            >>> model.fit(x_train, y_train, epochs=20)
        """
        keras_keys = {
            "loss_weights",
            "weighted_metrics",
            "run_eagerly",
            "steps_per_execution",
            "jit_compile",
            "auto_scale_loss",
        }
        keras_kwargs = {k: v for k, v in kwargs.items() if k in keras_keys}
        options = {k: v for k, v in kwargs.items() if k not in keras_keys}
        objective = objectives.get(robust, **options)
        if epsilon_schedule is not None and not isinstance(epsilon_schedule, Schedule):
            raise _config_error(
                "epsilon_schedule must be a vn.schedules schedule, got "
                f"{epsilon_schedule!r}."
            )
        schedule, target = _epsilon_schedule(epsilon, epsilon_schedule, objective)
        state = RobustState(
            objective=objective,
            epsilon=schedule,
            epsilon_target=target,
            norm=check_choice("norm", norm, ("linf", "l2")),
            input_range=check_input_range(input_range),
        )
        if objective.name != "standard" and self.built:
            from verinet.bounds.graph import BoundGraph

            state.graph = BoundGraph(self)  # raises on unsupported layers
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics is None:
            metrics = ["accuracy"]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **keras_kwargs)
        names = ["epsilon"] if objective.name != "standard" else []
        names += list(objective.metric_names)
        state.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        object.__setattr__(self, "_robust", state)
        self._compile_config.config["robust"] = {
            "objective": keras.saving.serialize_keras_object(objective),
            "epsilon": serialize_value(schedule),
            "norm": state.norm,
            "input_range": None
            if state.input_range is None
            else list(state.input_range),
        }

    @property
    def robust(self):
        """The compiled robust objective (``None`` before ``compile``)."""
        return None if self._robust is None else self._robust.objective

    @property
    def metrics(self):
        base = super().metrics
        if self._robust is None:
            return base
        return base + list(self._robust.trackers.values())

    def compile_from_config(self, config):
        config = dict(config)
        robust = config.pop("robust", None)
        config = keras.saving.deserialize_keras_object(config)
        if robust is not None:
            config.update(
                robust=keras.saving.deserialize_keras_object(robust["objective"]),
                epsilon=keras.saving.deserialize_keras_object(robust["epsilon"]),
                norm=robust["norm"],
                input_range=robust["input_range"],
            )
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, callbacks=None, **kwargs):
        """Keras's ``fit``, plus the clock that advances robust schedules."""
        state = self._robust
        if state is None or state.objective.name == "standard":
            return super().fit(*args, callbacks=callbacks, **kwargs)
        epochs = kwargs.get("epochs", args[3] if len(args) > 3 else 1)
        state.epsilon = state.epsilon.with_epochs(int(epochs))
        callbacks = [ScheduleClock(state), *(callbacks or [])]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        state = self._robust
        if state is None or state.objective.name == "standard":
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if state.objective.needs_bounds and state.graph is None:
            from verinet.bounds.graph import BoundGraph

            state.graph = BoundGraph(self)
        epsilon = (
            state.current_epsilon()
            if _has_ramp(state.epsilon)
            else state.epsilon_target
        )
        context = Context(
            model=self,
            epsilon=epsilon,
            epoch=state.epoch,
            norm=state.norm,
            input_range=state.input_range,
            loss=lambda pred: self._compile_loss(y, pred, sample_weight),
            training=training,
            graph=state.graph,
            sample_weight=sample_weight,
        )
        x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
        loss, values = state.objective.compute(context, x, y, y_pred)
        trackers = state.trackers
        trackers["epsilon"].update_state(epsilon)
        for name, value in values.items():
            trackers[name].update_state(value)
        for extra in self.losses:
            loss = loss + ops.sum(extra)
        return loss


def _has_ramp(schedule) -> bool:
    return getattr(schedule, "ramp_epochs", 1.0) is not None
