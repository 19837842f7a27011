"""Checks of the data given to ``fit`` and ``evaluate`` of a robust model.

``fit`` and ``evaluate`` check their data as ``certify`` does: in-memory
arrays once, before anything trains; generators, ``keras.utils.PyDataset``
and torch ``DataLoader`` batches in ``train_step``/``test_step``, before the
batch can touch a weight. A small callback records which batch is being
checked, so an error names it.

``RobustTrainingMixin`` (``robust.py``) holds one ``DataChecks`` per
compiled model and uses only its public methods:

* ``fitting``/``evaluating``: context managers around Keras's ``fit`` and
  ``evaluate`` that check in-memory data on entry, switch the per-batch
  checks on for the rest, and hand back the callbacks those need;
* ``check_train_batch``/``check_test_batch``: the per-batch checks, called
  from ``train_step``/``test_step``;
* ``check_label_shape``: refuses one-hot labels from shapes alone, called
  from ``compute_loss``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from verinet._validation import as_numpy, check_training_data
from verinet.errors import InvalidInputError


def is_sparse_loss(loss) -> bool:
    """Whether ``loss`` reads ``y`` as class indices (sparse cross-entropy).

    Args:
        loss: compile's ``loss`` (``None`` is verinet's default, sparse
            categorical cross-entropy on logits).

    Returns:
        ``True`` for sparse categorical cross-entropy in any spelling.

    Example:
        >>> is_sparse_loss("sparse_categorical_crossentropy")
        True
    """
    if loss is None or isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    if isinstance(loss, str):
        return loss.lower().replace("_", "") == "sparsecategoricalcrossentropy"
    return loss is keras.losses.sparse_categorical_crossentropy


def in_memory(*values) -> bool:
    """Whether every value is an array or tensor (not a generator, dataset...).

    Args:
        *values: ``fit``'s or ``evaluate``'s ``x``, ``y`` (nested structures
            allowed; ``None`` leaves are skipped).

    Returns:
        ``True`` when the data can be checked once, up front.

    Example:
        >>> in_memory(np.zeros((4, 2)), None)
        True
    """
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


def _classes(model) -> int | None:
    """The number of model outputs, or ``None`` when not known yet."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1 or outputs[0].shape[-1] is None:
        return None
    return int(outputs[0].shape[-1])


@dataclass
class DataChecks:
    """What ``fit``/``evaluate`` check, and where the trainer is.

    Args:
        input_range: compile's ``(low, high)``, or ``None``.
        labels: whether ``y`` holds class indices (a sparse loss or an
            objective that reads integer labels).

    The other fields are set while ``fit``/``evaluate`` run: whether
    training (``train``) and test (``test``) batches are checked one by one,
    the name of the test data, and the current epoch and batches.

    Example:
        >>> checks = DataChecks((0.0, 1.0), labels=True)
        >>> with checks.fitting(model, x_train, y_train, None) as callbacks:
        ...     ...  # Keras's fit, with ``callbacks`` added to its own
    """

    input_range: tuple | None
    labels: bool = True
    train: bool = False
    test: bool = False
    test_data: str = "evaluate's data"
    epoch: int = 0
    batch: int = 0
    test_batch: int = 0

    @contextmanager
    def fitting(self, model, x, y, validation_data) -> Iterator[list]:
        """Check ``fit``'s data: arrays now, other data batch by batch.

        Args:
            model: the model being trained.
            x, y: ``fit``'s ``x`` and ``y``.
            validation_data: ``fit``'s ``validation_data`` (or ``None``).

        Returns:
            A context manager yielding the callbacks to add to ``fit``'s
            (empty when all data is in memory); per-batch checks are on
            inside it and off after it.

        Raises:
            InvalidInputError: on entry, for bad in-memory data.
        """
        train = not in_memory(x, y)
        if not train and x is not None:
            self._check_arrays(model, x, y, "fit's x and y")
        test = False
        if validation_data is not None:
            val_x, val_y, _ = keras.utils.unpack_x_y_sample_weight(validation_data)
            if in_memory(val_x, val_y):
                if val_x is not None:
                    self._check_arrays(model, val_x, val_y, "fit's validation_data")
            else:
                test = True
        self.train, self.test = train, test
        self.test_data = "fit's validation_data"
        try:
            yield [_BatchTracker(self)] if train or test else []
        finally:
            self.train = self.test = False

    @contextmanager
    def evaluating(self, model, x, y, callbacks) -> Iterator[object]:
        """Check ``evaluate``'s data: arrays now, other data batch by batch.

        Args:
            model: the model being evaluated.
            x, y: ``evaluate``'s ``x`` and ``y``.
            callbacks: ``evaluate``'s ``callbacks``.

        Returns:
            A context manager yielding the callbacks to pass on (with the
            batch tracker added for data that is not in memory, unless they
            are Keras's own ``CallbackList``).

        Raises:
            InvalidInputError: on entry, for bad in-memory data.
        """
        if in_memory(x, y):
            if x is not None:
                self._check_arrays(model, x, y, "evaluate's x and y")
            yield callbacks
            return
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = [_BatchTracker(self), *(callbacks or [])]
        self.test, self.test_data = True, "evaluate's data"
        try:
            yield callbacks
        finally:
            self.test = False

    def check_train_batch(self, model, data) -> None:
        """Check one training batch when ``fit``'s data is not in memory.

        Args:
            model: the model being trained.
            data: the batch, as ``train_step`` receives it.

        Raises:
            InvalidInputError: naming the batch and epoch (from 0).
        """
        if self.train:
            self._check_batch(
                model,
                data,
                f"fit's training data, batch {self.batch} of epoch "
                f"{self.epoch} (counting from 0)",
            )

    def check_test_batch(self, model, data) -> None:
        """Check one test batch when the test data is not in memory.

        Args:
            model: the model being evaluated.
            data: the batch, as ``test_step`` receives it.

        Raises:
            InvalidInputError: naming the data and the batch (from 0).
        """
        if self.test:
            self._check_batch(
                model, data, f"{self.test_data}, batch {self.test_batch} (from 0)"
            )

    def check_label_shape(self, y, y_pred) -> None:
        """Refuse one-hot (or otherwise shaped) labels from shapes alone.

        This also runs on the symbolic batch Keras builds the loss with, so
        a generator's one-hot labels get this message rather than a torch
        shape error; it costs no device work.

        Args:
            y: the labels of a batch.
            y_pred: the model's output for it.

        Raises:
            InvalidInputError: for labels that are not a vector of class
                indices when ``labels`` is set.
        """
        if not self.labels:
            return
        if not (hasattr(y, "shape") and hasattr(y_pred, "shape")):
            return  # several outputs: Keras's own checks apply
        shape, out = tuple(y.shape), tuple(y_pred.shape)
        if len(out) != 2 or len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1):
            return  # a vector of labels, or not a classifier's (batch, classes)
        where = (
            "fit's training data"
            if self.train
            else self.test_data
            if self.test
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

    # -- the checks -------------------------------------------------------------

    def _checks_labels(self, model) -> bool:
        """Labels are class indices of a ``(batch, classes)`` output."""
        if not self.labels:
            return False
        try:
            outputs = model.outputs
        except (AttributeError, ValueError):
            return True  # not built yet: assume the usual classifier
        return bool(outputs) and len(outputs) == 1 and len(outputs[0].shape) == 2

    def _check_arrays(self, model, x, y, where):
        """Check in-memory data once (see ``check_training_data``)."""
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
            model,
            x,
            y if _is_single_array(y) else None,
            input_range=self.input_range,
            classes=_classes(model),
            labels=self._checks_labels(model),
            where=where,
        )

    def _check_batch(self, model, data, where):
        """Check one batch on its device, with one host sync; explain on failure."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not _is_single_array(x):
            return self._check_arrays(model, x, y, where)
        x = ops.convert_to_tensor(x)
        expected = None
        try:
            expected = tuple(model.inputs[0].shape[1:])
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
        if not bad and self.input_range is not None:
            low, high = self.input_range
            if np.ndim(low) == 0 and np.ndim(high) == 0:
                flags += [ops.min(x) < low, ops.max(x) > high]
            else:  # per feature, compared in float64 (any data dtype)
                x64 = ops.cast(x, "float64")
                low, high = (
                    ops.convert_to_tensor(v, dtype="float64") for v in (low, high)
                )
                flags += [ops.any(x64 < low), ops.any(x64 > high)]
        if not bad and _is_single_array(y) and self._checks_labels(model):
            y = ops.convert_to_tensor(y)
            classes = _classes(model)
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
            self._check_arrays(model, x, y, where)  # raises, with the details
        return None


class _BatchTracker(keras.callbacks.Callback):
    """Records the current epoch and batch, for per-batch check messages."""

    def __init__(self, checks: DataChecks):
        super().__init__()
        self.checks = checks

    def on_epoch_begin(self, epoch, logs=None):
        self.checks.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.checks.batch = batch

    def on_test_begin(self, logs=None):
        self.checks.test_batch = 0

    def on_test_batch_begin(self, batch, logs=None):
        self.checks.test_batch = batch
