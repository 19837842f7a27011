"""``compile(robust=...)``: robust objectives inside Keras's own trainer.

The objective runs in ``compute_loss`` (which receives ``x``), so ``fit``,
callbacks, ``History``, checkpoints and progress bars are Keras's own. Small
callbacks keep the schedule position (a fractional-epoch counter that is
saved with the model) and put the objective's name into ``History.params``.

``fit`` and ``evaluate`` check their data as ``certify`` does (arrays once,
other data batch by batch); that lives in ``data_checks.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from verinet import distributed, objectives
from verinet._validation import (
    check_choice,
    check_feature_epsilon,
    check_feature_range,
    check_input_range,
)
from verinet.bounds.perturbation import unpack_ball
from verinet.errors import InvalidInputError
from verinet.models.data_checks import DataChecks, is_sparse_loss
from verinet.objectives.base import Context, serialize_value
from verinet.schedules.schedules import (
    Constant,
    Schedule,
    check_schedule,
    resolve_schedule,
)


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
    checks: DataChecks
    trackers: dict = field(default_factory=dict)
    position: float = 0.0
    graph: object = None
    epsilon_profile: object = None  # per-feature radii / their max, or None

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
        elif objective.requires_bounds:
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
                ``epsilon_schedule`` says otherwise. With ``norm="linf"`` also
                an array broadcastable to the input shape (one radius per
                feature): the schedule ramps its largest value and each
                feature keeps its share.
            norm: ``"linf"`` or ``"l2"``.
            input_range: valid input box ``(low, high)``, e.g. ``(0, 1)``;
                ``fit`` and ``evaluate`` refuse data outside it. Either side
                may be an array broadcastable to the input shape.
            epsilon_schedule: a schedule whose unset ``end`` is ``epsilon``.
            **kwargs: options for a named objective (e.g. ``beta=6.0``,
                ``steps=10``), then Keras's own compile arguments.
                ``jit_compile=True`` works but warns unless epsilon is a
                ``Constant``: torch.compile retraces the step at every new
                epsilon value.

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

        History gets ``epsilon`` (the mean radius of the epoch's steps) and
        the objective's metrics: ``verified_accuracy`` (``"ibp"``,
        ``"crown-ibp"``: the fraction of the epoch's training samples whose
        training bounds prove them) or ``adversarial_accuracy`` (``"pgd"``,
        ``"trades"``), each a mean over samples. They are measured **at the
        step's epsilon**, which ramps up: early in training they describe a
        smaller radius than the target, and may fall as the ramp rises. To
        monitor robustness at the target radius (for ``EarlyStopping`` or
        ``ModelCheckpoint``), add ``vn.callbacks.CertifyEvery``, which writes
        ``val_certified_accuracy``.

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
        epsilon, norm, input_range = unpack_ball(epsilon, norm, input_range)
        profile = None
        if not isinstance(epsilon, Schedule) and np.ndim(epsilon) > 0:
            epsilon, profile = self._per_feature_epsilon(epsilon, norm)
        if epsilon_schedule is not None and not isinstance(epsilon_schedule, Schedule):
            raise _config_error(
                "epsilon_schedule must be a vn.schedules schedule, got "
                f"{epsilon_schedule!r}."
            )
        schedule, target = _epsilon_schedule(epsilon, epsilon_schedule, objective)
        norm = check_choice("norm", norm, ("linf", "l2"))
        input_range = self._checked_input_range(input_range)
        state = RobustState(
            objective=objective,
            epsilon=schedule,
            epsilon_target=target,
            norm=norm,
            input_range=input_range,
            checks=DataChecks(
                input_range, labels=objective.integer_labels or is_sparse_loss(loss)
            ),
            epsilon_profile=profile,
        )
        if objective.requires_bounds and self.built:
            from verinet.bounds.graph import BoundGraph

            state.graph = BoundGraph(self)  # raises on unsupported layers
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics is None:
            metrics = ["accuracy"]
        if keras_kwargs.get("jit_compile") is True and not isinstance(
            schedule, Constant
        ):
            warnings.warn(
                "compile(jit_compile=True) with a changing epsilon schedule: "
                "torch.compile retraces the train step whenever epsilon "
                "changes (every batch of the ramp), and the logged 'epsilon' "
                "can lag the value the loss used. Pass a constant epsilon "
                "(vn.schedules.Constant) or leave jit_compile off; it did not "
                "speed up robust training on the CPU.",
                UserWarning,
                stacklevel=2,
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **keras_kwargs)
        names = ["epsilon"] if objective.uses_epsilon else []
        names += list(objective.metric_names)
        state.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        object.__setattr__(self, "_robust", state)
        self._compile_config.config["robust"] = {
            "objective": keras.saving.serialize_keras_object(objective),
            "epsilon": serialize_value(schedule),
            "norm": state.norm,
            "input_range": None
            if state.input_range is None
            else [np.asarray(v).tolist() for v in state.input_range],
        }

    def _per_feature_epsilon(self, epsilon, norm):
        """``(max radius, radii / max)`` of a per-feature L-inf epsilon: the
        schedule ramps the max, every feature keeps its share of it."""
        if norm != "linf":
            raise _config_error(
                "A per-feature epsilon (an array) is an L-inf box; norm='l2' takes "
                "one number."
            )
        if not self.built or not getattr(self, "inputs", None):
            raise _config_error(
                "A per-feature epsilon needs the model's input shape: give the "
                "model an Input layer before compile."
            )
        radii = check_feature_epsilon(epsilon, tuple(self.inputs[0].shape[1:]))
        top = float(radii.max()) if radii.size else 0.0
        return top, (radii / top if top > 0 else None)

    def _checked_input_range(self, input_range):
        """compile's ``(low, high)``: numbers, or arrays of the input shape."""
        if input_range is None or all(np.ndim(v) == 0 for v in input_range):
            return check_input_range(input_range)
        if not self.built or not getattr(self, "inputs", None):
            raise _config_error(
                "A per-feature input_range needs the model's input shape: give "
                "the model an Input layer before compile."
            )
        return check_feature_range(input_range, tuple(self.inputs[0].shape[1:]))

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
            f"Norm: {state.norm}"
            + ("" if state.epsilon_profile is None else " (per-feature epsilon)"),
            "Input range: "
            + (
                "per feature"
                if state.input_range is not None
                and any(np.ndim(v) > 0 for v in state.input_range)
                else f"{state.input_range}"
            ),
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
            if state.epsilon_profile is not None:
                config["robust"]["epsilon_profile"] = state.epsilon_profile.tolist()
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
            profile = robust.get("epsilon_profile")
            if profile is not None:
                self._robust.epsilon_profile = np.asarray(profile, dtype=np.float64)
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

        Under ``torchrun`` (``torch.distributed`` initialized, several
        ranks) ``fit`` trains data-parallel with DDP semantics, for every
        ``robust=`` objective (see ``vn.distributed`` and docs/scaling.md):

        * ``batch_size`` is the global batch. Rank ``r`` of ``N`` trains on
          its share of each global batch, the first ``len % N`` ranks one
          sample more (a rank's share of a short last batch may be empty).
          Gradients are summed over the ranks weighted by their sample
          counts in one all-reduce before ``optimizer.apply``: the gradient
          of the global batch's mean loss. ``N`` processes reach the weights
          one process reaches with the same ``batch_size`` (to float
          rounding) for a deterministic objective (e.g. IBP) and
          ``shuffle=False``; with ``shuffle=True`` the ranks share one
          permutation per epoch (seeded from NumPy's global generator on
          rank 0), not the one Keras would draw.
        * Batch normalization uses each rank's own batch statistics; the
          moving statistics are rank 0's after every epoch (as DDP's buffer
          broadcast leaves them). Weights start as rank 0's.
        * The epoch's logs are summed over the ranks (whole-epoch metrics,
          the same on every rank, so ``EarlyStopping`` and
          ``ReduceLROnPlateau`` decide alike); per-batch logs are each
          rank's own. Validation data is evaluated whole on every rank.
        * Non-zero ranks run with ``verbose=0`` and drop
          ``keras.callbacks.ModelCheckpoint``: rank 0 alone writes
          checkpoints (the weights are the same on every rank). Give other
          callbacks that write files (``CSVLogger``, ``TensorBoard``,
          ``BackupAndRestore``) a path per rank or create them on rank 0
          only (``vn.distributed.rank() == 0``), except
          ``BackupAndRestore``, which every rank needs to resume.
        * ``steps_per_epoch`` counts global batches, the same on every rank.
          Data that is not in memory (``PyDataset``, generator,
          ``DataLoader``) is used as given: each rank must yield its own
          shard and the same number of batches.

        Launch with ``torchrun --nproc_per_node N script.py`` and call
        ``vn.distributed.init()`` (gloo on CPU; NCCL with one GPU per rank,
        ``cuda:LOCAL_RANK``) before building the model.

        Returns:
            Keras's ``History``; ``history.params["robust"]`` is the
            resolved objective's name (e.g. ``"crown-ibp"``).

        Raises:
            InvalidInputError: for bad data; the weights are left as they
                were before the offending batch. Under torchrun, also for a
                ``batch_size`` smaller than the number of ranks.

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
        distributed.warn_if_not_initialized("fit")
        if distributed.is_distributed():
            arguments, callbacks = distributed.fit_arguments(arguments, callbacks)
        state = self._robust
        if state is None:
            return super().fit(callbacks=callbacks, **arguments)
        with state.checks.fitting(self, x, y, validation_data) as trackers:
            extra = [_ReportObjective(state)]
            if state.objective.uses_epsilon:
                state.epsilon = state.epsilon.with_epochs(int(epochs))
                extra.append(ScheduleClock(state))
            extra += trackers
            return super().fit(callbacks=[*extra, *(callbacks or [])], **arguments)

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
        with state.checks.evaluating(self, x, y, callbacks) as checked_callbacks:
            arguments["callbacks"] = checked_callbacks
            return super().evaluate(**arguments)

    def train_step(self, data):
        if self._robust is not None:
            self._robust.checks.check_train_batch(self, data)
        if distributed.is_distributed():
            return distributed.data_parallel_step(self, data)
        return super().train_step(data)

    def test_step(self, data):
        if self._robust is not None:
            self._robust.checks.check_test_batch(self, data)
        return super().test_step(data)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        state = self._robust
        if state is not None and y is not None:
            state.checks.check_label_shape(y, y_pred)
        if state is None or not state.objective.uses_epsilon:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if state.objective.requires_bounds and state.graph is None:
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
            epsilon_target=state.epsilon_target,
            epsilon_profile=state.epsilon_profile,
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
