"""``compile(robust=...)``: robust objectives inside Keras's own trainer.

The objective runs in ``compute_loss`` (which receives ``x``), so ``fit``,
callbacks, ``History``, checkpoints and progress bars are Keras's own. Small
callbacks keep the schedule position (a fractional-epoch counter that is
saved with the model) and say which batch is being checked.

``fit`` and ``evaluate`` check their data as ``certify`` does: in-memory
arrays once, before anything trains; generators, ``keras.utils.PyDataset``
and torch ``DataLoader`` batches in ``train_step``/``test_step``, before the
batch can touch a weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from verinet import objectives
from verinet._validation import (
    as_numpy,
    check_choice,
    check_input_range,
    check_training_data,
)
from verinet.errors import InvalidInputError
from verinet.objectives.base import Context, serialize_value
from verinet.schedules.schedules import Schedule, check_schedule, resolve_schedule


@dataclass
class RobustState:
    """The robust configuration of a compiled model (not Keras-tracked).

    ``position`` is the schedule position in (fractional) epochs: it advances
    by ``1 / steps`` after every training batch, continues across ``fit``
    calls and is saved with the model; ``compile`` restarts it at 0.
    """

    objective: objectives.Objective
    epsilon: Schedule
    epsilon_target: float
    norm: str
    input_range: tuple | None
    labels: bool = True
    trackers: dict = field(default_factory=dict)
    position: float = 0.0
    graph: object = None
    # Per-batch data checks (for data that is not in memory) and where the
    # trainer is, for their messages.
    check_train: bool = False
    check_test: bool = False
    test_data: str = "evaluate's data"
    at_epoch: int = 0
    at_batch: int = 0
    at_test_batch: int = 0

    @property
    def epoch(self) -> float:
        """The schedule position (an alias kept for older callers)."""
        return self.position

    def current_epsilon(self) -> float:
        return float(self.epsilon(self.position))


class ScheduleClock(keras.callbacks.Callback):
    """Advances the robust state's schedule position every batch.

    The first epoch of a ``fit`` decides where the position starts: at
    ``initial_epoch`` when it is above 0 (an explicit ``initial_epoch``, or
    ``keras.callbacks.BackupAndRestore`` resuming), otherwise where the
    previous ``fit`` left it.
    """

    def __init__(self, state: RobustState):
        super().__init__()
        self.state = state
        self._start = state.position
        self._base = None
        self._epoch = 0

    def _steps(self):
        return self.params.get("steps") if self.params else None

    def on_epoch_begin(self, epoch, logs=None):
        if self._base is None:
            self._base = 0.0 if epoch > 0 else self._start
        self._epoch = epoch
        self.state.position = self._base + epoch

    def on_train_batch_begin(self, batch, logs=None):
        steps = self._steps()
        self.state.position = self._base + self._epoch + (batch / steps if steps else 0)

    def on_train_batch_end(self, batch, logs=None):
        steps = self._steps()
        if steps:
            self.state.position = self._base + self._epoch + (batch + 1) / steps

    def on_epoch_end(self, epoch, logs=None):
        if not self._steps():  # batches of unknown count: a whole epoch
            self.state.position = self._base + epoch + 1.0


class _ReportObjective(keras.callbacks.Callback):
    """Puts the resolved objective's name into ``History.params``.

    Keras's ``CallbackList`` hands one params dict to every callback, the
    ``History`` included, so adding to it here shows in ``history.params``.
    """

    def __init__(self, state: RobustState):
        super().__init__()
        self.state = state

    def on_train_begin(self, logs=None):
        if self.params is not None:
            self.params["robust"] = self.state.objective.name


class _BatchTracker(keras.callbacks.Callback):
    """Records the current epoch and batch, for per-batch check messages."""

    def __init__(self, state: RobustState):
        super().__init__()
        self.state = state

    def on_epoch_begin(self, epoch, logs=None):
        self.state.at_epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.state.at_batch = batch

    def on_test_begin(self, logs=None):
        self.state.at_test_batch = 0

    def on_test_batch_begin(self, batch, logs=None):
        self.state.at_test_batch = batch


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
    check_schedule(schedule, "epsilon", low=0.0)
    target = schedule.end if hasattr(schedule, "end") else schedule.value
    return schedule, float(target if target is not None else 0.0)


def _config_error(message):
    """The error for bad compile arguments."""
    return InvalidInputError(message)


def _is_sparse_loss(loss) -> bool:
    """Whether ``loss`` reads ``y`` as class indices (sparse cross-entropy)."""
    if loss is None or isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    if isinstance(loss, str):
        return loss.lower().replace("_", "") == "sparsecategoricalcrossentropy"
    return loss is keras.losses.sparse_categorical_crossentropy


def _in_memory(*values) -> bool:
    """Whether every value is an array or tensor (not a generator, dataset...)."""
    for value in values:
        for leaf in keras.tree.flatten(value):
            if leaf is None:
                continue
            if isinstance(leaf, (keras.utils.PyDataset, str, bytes)):
                return False
            if not (isinstance(leaf, np.ndarray) or hasattr(leaf, "__array__")):
                return False
    return True


def _is_single_array(value) -> bool:
    return value is not None and not isinstance(value, (list, tuple, dict))


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
                ``"crown-ibp"`` (CROWN-IBP training; ``"crown"`` is accepted
                as an alias), ``"smoothing"`` or a ``vn.objectives`` object.
            epsilon: target radius (a finite number >= 0) or a
                ``vn.schedules`` schedule that never goes below 0. For
                ``"ibp"``/``"crown-ibp"`` a number ramps linearly from 0 over
                the first half of the first ``fit``'s epochs unless
                ``epsilon_schedule`` says otherwise.
            norm: ``"linf"`` or ``"l2"``.
            input_range: valid input box ``(low, high)``, e.g. ``(0, 1)``;
                ``fit`` and ``evaluate`` refuse data outside it.
            epsilon_schedule: a schedule whose unset ``end`` is ``epsilon``.
            **kwargs: options for a named objective (e.g. ``beta=6.0``,
                ``steps=10``), then Keras's own compile arguments.

        Returns:
            None.

        Raises:
            InvalidInputError: for an unknown objective, a bad option, a
                negative, NaN or infinite epsilon (or a schedule that reaches
                one), an unknown norm or a bad input range.

        Schedules are read at a *position* in epochs that advances by
        ``1 / steps`` every training batch and continues from one ``fit`` to
        the next; ``compile`` starts it at 0 (see ``fit``). A schedule's
        unset ``ramp_epochs`` is fixed by the first ``fit`` (half of its
        ``epochs``, after the warmup) and kept from then on, also through a
        ``.keras`` save and load.

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
            labels=objective.integer_labels or _is_sparse_loss(loss),
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

    def robust_summary(self) -> str:
        """One line per setting of the compiled robust objective.

        Returns:
            A string naming the resolved objective (e.g. ``crown-ibp`` for
            ``robust="crown"``), its options, the epsilon schedule with its
            current value and position, the norm and the input range.

        Example:
            >>> model.compile("adam", robust="crown", epsilon=0.1)
            >>> print(model.robust_summary())
            Robust objective: crown-ibp  CROWNIBP(kappa=None, beta=None)
            ...
        """
        state = self._robust
        if state is None:
            return f"Model {self.name!r} is not compiled: call compile(robust=...)."
        ramp_set = _has_ramp(state.epsilon)
        now = state.current_epsilon() if ramp_set else state.epsilon_target
        lines = [
            f"Robust objective: {state.objective.name}  {state.objective!r}",
            f"Epsilon: {state.epsilon!r} (target {state.epsilon_target:g}, "
            f"{now:g} at position {state.position:g} epochs"
            + ("" if ramp_set else "; ramp length set by the first fit")
            + ")",
            f"Norm: {state.norm}",
            f"Input range: {state.input_range}",
        ]
        return "\n".join(lines)

    @property
    def metrics(self):
        base = super().metrics
        if self._robust is None:
            return base
        return base + list(self._robust.trackers.values())

    def get_compile_config(self):
        config = super().get_compile_config()
        state = self._robust
        if state is not None and config and "robust" in config:
            # The schedule as fit resolved it, and how far it has run.
            config["robust"] = {
                **config["robust"],
                "epsilon": serialize_value(state.epsilon),
                "position": state.position,
            }
        return config

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
        if robust is not None:
            self._robust.position = float(robust.get("position", 0.0))
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
        **kwargs,
    ):
        """Keras's ``fit``, with checked data and the clock of the schedules.

        Args:
            x, y, ...: as in Keras's ``fit``. In-memory arrays (numpy, torch)
                are checked once, before training: shape against the model's
                input, finite values, ``x`` inside compile's ``input_range``,
                and (for sparse labels) integer labels in range, one-hot
                labels named as such. Generators, ``keras.utils.PyDataset``
                and torch ``DataLoader``s are checked batch by batch before
                the batch reaches the weights; the error names the batch.
                ``validation_data`` and ``validation_split`` are checked too.
            epochs: as in Keras. The first ``fit`` after ``compile`` fixes an
                unset ramp length to half of it.
            initial_epoch: as in Keras. Above 0, the schedule position starts
                at ``initial_epoch``; at 0 it continues from where the last
                ``fit`` stopped (0 after ``compile``), so two ``fit(epochs=2)``
                calls follow the schedule as one ``fit(epochs=4)`` would.

        Returns:
            Keras's ``History``; ``history.params["robust"]`` is the
            resolved objective's name (e.g. ``"crown-ibp"``).

        Raises:
            InvalidInputError: for bad data; the weights are left as they
                were before the offending batch.

        Example:
            >>> model.fit(x_train, y_train, epochs=10, validation_split=0.1)
            >>> model.fit(x_train, y_train, epochs=10)  # the ramp continues
        """
        arguments = dict(
            x=x,
            y=y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            validation_split=validation_split,
            validation_data=validation_data,
            shuffle=shuffle,
            class_weight=class_weight,
            sample_weight=sample_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_batch_size=validation_batch_size,
            validation_freq=validation_freq,
            **kwargs,
        )
        state = self._robust
        if state is None:
            return super().fit(callbacks=callbacks, **arguments)
        check_train = not _in_memory(x, y)
        if not check_train and x is not None:
            self._check_dataset(x, y, "fit's x and y")
        check_test = False
        if validation_data is not None:
            val_x, val_y, _ = keras.utils.unpack_x_y_sample_weight(validation_data)
            if _in_memory(val_x, val_y):
                if val_x is not None:
                    self._check_dataset(val_x, val_y, "fit's validation_data")
            else:
                check_test = True
        extra = [_ReportObjective(state)]
        if state.objective.name != "standard":
            state.epsilon = state.epsilon.with_epochs(int(epochs))
            extra.append(ScheduleClock(state))
        if check_train or check_test:
            extra.append(_BatchTracker(state))
        state.check_train, state.check_test = check_train, check_test
        state.test_data = "fit's validation_data"
        try:
            return super().fit(callbacks=[*extra, *(callbacks or [])], **arguments)
        finally:
            state.check_train = state.check_test = False

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """Keras's ``evaluate``, with the data checked as ``fit`` checks it.

        Args:
            x, y, ...: as in Keras's ``evaluate``; arrays are checked once,
                generators and data loaders batch by batch.

        Returns:
            As in Keras.

        Raises:
            InvalidInputError: for bad data (shape, NaN, labels, range).

        Example:
            >>> loss, accuracy = model.evaluate(x_test, y_test)
        """
        arguments = dict(
            x=x,
            y=y,
            batch_size=batch_size,
            verbose=verbose,
            sample_weight=sample_weight,
            steps=steps,
            callbacks=callbacks,
            return_dict=return_dict,
            **kwargs,
        )
        state = self._robust
        if state is None or kwargs.get("_use_cached_eval_dataset"):
            # fit's validation: fit checked the data or set per-batch checks.
            return super().evaluate(**arguments)
        if _in_memory(x, y):
            if x is not None:
                self._check_dataset(x, y, "evaluate's x and y")
            return super().evaluate(**arguments)
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            arguments["callbacks"] = [_BatchTracker(state), *(callbacks or [])]
        state.check_test, state.test_data = True, "evaluate's data"
        try:
            return super().evaluate(**arguments)
        finally:
            state.check_test = False

    def train_step(self, data):
        state = self._robust
        if state is not None and state.check_train:
            self._check_batch(
                data,
                f"fit's training data, batch {state.at_batch} of epoch "
                f"{state.at_epoch} (counting from 0)",
            )
        return super().train_step(data)

    def test_step(self, data):
        state = self._robust
        if state is not None and state.check_test:
            self._check_batch(
                data, f"{state.test_data}, batch {state.at_test_batch} (from 0)"
            )
        return super().test_step(data)

    def _classes(self):
        """The number of model outputs, or ``None`` when not known yet."""
        try:
            outputs = self.outputs
        except (AttributeError, ValueError):
            return None
        if not outputs or len(outputs) != 1 or outputs[0].shape[-1] is None:
            return None
        return int(outputs[0].shape[-1])

    def _checks_labels(self) -> bool:
        """Labels are class indices of a ``(batch, classes)`` output."""
        if not self._robust.labels:
            return False
        try:
            outputs = self.outputs
        except (AttributeError, ValueError):
            return True  # not built yet: assume the usual classifier
        return bool(outputs) and len(outputs) == 1 and len(outputs[0].shape) == 2

    def _check_dataset(self, x, y, where):
        """Check in-memory data once (see ``check_training_data``)."""
        state = self._robust
        if not _is_single_array(x):
            for leaf in keras.tree.flatten(x):  # multi-input: finite values only
                values = as_numpy(leaf)
                if np.issubdtype(values.dtype, np.floating) and not np.all(
                    np.isfinite(values)
                ):
                    raise InvalidInputError(
                        f"{where}: an input holds NaN or infinite values."
                    )
            return
        check_training_data(
            self,
            x,
            y if _is_single_array(y) else None,
            input_range=state.input_range,
            classes=self._classes(),
            labels=self._checks_labels(),
            where=where,
        )

    def _check_batch(self, data, where):
        """Check one batch on its device, with one host sync; explain on failure."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not _is_single_array(x):
            return self._check_dataset(x, y, where)
        state = self._robust
        x = ops.convert_to_tensor(x)
        expected = None
        try:
            expected = tuple(self.inputs[0].shape[1:])
        except (AttributeError, IndexError, TypeError, ValueError):
            pass
        bad = expected is not None and (
            len(x.shape) != len(expected) + 1
            or any(
                e is not None and e != s
                for e, s in zip(expected, x.shape[1:], strict=False)
            )
        )
        flags = []
        if not bad and "float" in str(x.dtype):
            flags.append(ops.logical_not(ops.all(ops.isfinite(x))))
        if not bad and state.input_range is not None:
            low, high = state.input_range
            flags += [ops.min(x) < low, ops.max(x) > high]
        if not bad and _is_single_array(y) and self._checks_labels():
            y = ops.convert_to_tensor(y)
            classes = self._classes()
            if len(y.shape) == 2 and y.shape[-1] == 1:
                y = ops.reshape(y, (-1,))
            if len(y.shape) != 1 or y.shape[0] != x.shape[0]:
                bad = True
            else:
                flags.append(ops.min(y) < 0)
                if classes is not None:
                    flags.append(ops.max(y) >= classes)
                if "float" in str(y.dtype):
                    flags.append(ops.any(y != ops.round(y)))
        if bad or (flags and bool(ops.any(ops.stack(flags)))):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            self._check_dataset(x, y, where)  # raises, with the details
        return None

    def _check_label_shape(self, y, y_pred):
        """Refuse one-hot (or otherwise shaped) labels from shapes alone.

        This also runs on the symbolic batch Keras builds the loss with, so
        a generator's one-hot labels get this message rather than a torch
        shape error; it costs no device work.
        """
        if not (hasattr(y, "shape") and hasattr(y_pred, "shape")):
            return  # several outputs: Keras's own checks apply
        shape, out = tuple(y.shape), tuple(y_pred.shape)
        if len(out) != 2 or len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1):
            return  # a vector of labels, or not a classifier's (batch, classes)
        state = self._robust
        where = (
            "fit's training data"
            if state.check_train
            else state.test_data
            if state.check_test
            else "the labels"
        )
        if len(shape) == 2 and len(out) == 2 and shape[-1] == out[-1]:
            raise InvalidInputError(
                f"{where}: y has shape {shape} and looks one-hot encoded; pass "
                "integer labels (y.argmax(axis=1))."
            )
        raise InvalidInputError(
            f"{where}: y has shape {shape}; pass a vector of integer class labels "
            "(batch,) or (batch, 1)."
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        state = self._robust
        if state is not None and state.labels and y is not None:
            self._check_label_shape(y, y_pred)
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
            epoch=state.position,
            norm=state.norm,
            input_range=state.input_range,
            loss=lambda pred: self._compile_loss(y, pred, sample_weight),
            training=training,
            graph=state.graph,
            sample_weight=sample_weight,
        )
        x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
        if state.objective.integer_labels and len(y.shape) == 2 and y.shape[-1] == 1:
            y = ops.reshape(y, (-1,))  # (batch, 1) labels, as Keras's losses take
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
