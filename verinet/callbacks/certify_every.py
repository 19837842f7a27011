"""``CertifyEvery``: certify the validation data while ``fit`` runs.

A Keras callback that runs ``vn.certify`` at the end of chosen epochs and
writes the verified and attack accuracy into the epoch logs, where Keras's
own ``EarlyStopping``, ``ModelCheckpoint``, ``ReduceLROnPlateau`` and
``History`` read them.
"""

from __future__ import annotations

import sys
import time
import warnings

import keras
import numpy as np

from verinet._validation import (
    check_batch_size,
    check_choice,
    check_int,
    check_x,
    check_y,
)
from verinet.callbacks._target import check_target_epsilon, target_settings
from verinet.errors import InvalidInputError

#: The keys ``CertifyEvery`` writes into every epoch's logs.
LOG_KEYS = ("val_certified_accuracy", "val_attack_accuracy")


class CertifyEvery(keras.callbacks.Callback):
    """Certify validation data every few epochs, at the target epsilon.

    At the end of a certified epoch it runs ``vn.certify`` on
    ``(x_val, y_val)`` with the model's current weights, in inference mode
    (batch-norm moving statistics are read, never updated; dropout is off),
    and writes two floats into the epoch's logs:

    * ``val_certified_accuracy``: the fraction of samples the bound method
      proves robust (``report.verified_accuracy``);
    * ``val_attack_accuracy``: the fraction the attack did not break
      (``report.attack_accuracy``).

    The epsilon is the *target* of ``compile(robust=..., epsilon=...)`` (the
    value an epsilon schedule ramps towards, per feature for a per-feature
    epsilon), not the value the ramp has reached, so the figures of every
    epoch measure the same threat model. Norm and input range also come
    from ``compile`` unless given here.

    **Which epochs.** An epoch is certified when ``(epoch + 1) % every ==
    0``, when it is the last epoch of ``fit`` (``epochs - 1``), and when it
    is the first epoch of a ``fit``. On the other epochs nothing is
    certified and the logs repeat the values of the last certification, so
    that every epoch carries both keys: ``History`` lists stay one value per
    epoch, and a repeated value is never an improvement, so
    ``ModelCheckpoint(save_best_only=True)`` saves only at certified epochs
    (Keras saves when its monitor is *missing*; hence the certification at
    a ``fit``'s first epoch). ``EarlyStopping``'s and ``ReduceLROnPlateau``'s
    ``patience`` then counts epochs, certified or not: with ``every=k``,
    ``patience=p * k`` allows ``p`` certifications without improvement.

    **Order of callbacks.** Keras calls callbacks in list order with one
    logs dict, so ``CertifyEvery`` must come *before* any callback that
    monitors its keys: ``callbacks=[CertifyEvery(...), EarlyStopping(...)]``.
    It warns at the start of ``fit`` when it can see such a callback listed
    before it. Monitor with ``mode="max"``: Keras cannot tell the direction
    of these keys by itself.

    Args:
        x_val: validation inputs ``(n, *input_shape)``.
        y_val: integer labels ``(n,)``.
        epsilon: radius to certify at (or per-feature radii); default the
            target epsilon of ``compile(robust=...)``.
        method: bound method, as in ``vn.certify`` (``"crown"``, ``"ibp"``,
            ``"alpha-crown"``, ...).
        every: certify every ``every`` epochs (an int >= 1).
        attack: ``"pgd"``, ``"fgsm"``, an attack object or ``None``, as in
            ``vn.certify``.
        norm: ``"linf"`` or ``"l2"``; default compile's norm.
        input_range: ``(low, high)``; default compile's input range.
        batch_size: samples bounded at a time.
        verbose: 0 (silent) or 1 (one line per certification).

    Attributes:
        history: one dict per certification: ``epoch``, ``epsilon``,
            ``certified_accuracy``, ``attack_accuracy``, ``seconds``.
        last_report: the ``CertificationReport`` of the last certification
            (``None`` before the first).

    Raises:
        InvalidInputError: for a bad argument (here), or at the start of
            ``fit`` for validation data that does not fit the model, or when
            no epsilon is given and the model was compiled without a robust
            objective.

    Example:
        >>> certifier = vn.callbacks.CertifyEvery(x_val, y_val, every=2)
        >>> model.compile("adam", robust="ibp", epsilon=0.1, input_range=(0, 1))
        >>> model.fit(x, y, epochs=20, callbacks=[
        ...     certifier,  # before the callbacks that read its keys
        ...     keras.callbacks.EarlyStopping(
        ...         monitor="val_certified_accuracy", mode="max", patience=6),
        ... ])
        >>> certifier.history[-1]["certified_accuracy"]
    """

    def __init__(
        self,
        x_val,
        y_val,
        epsilon=None,
        method="crown",
        every: int = 1,
        attack="pgd",
        norm: str | None = None,
        input_range=None,
        batch_size: int = 256,
        verbose: int = 0,
    ):
        super().__init__()
        self.x_val, self.y_val = _paired(x_val, y_val)
        self.epsilon = check_target_epsilon(epsilon)
        self.method = _checked_method(method)
        self.every = check_int("every", every)
        self.attack = (
            check_choice("attack", attack, ("pgd", "fgsm"))
            if isinstance(attack, str)
            else attack
        )
        self.norm = None if norm is None else check_choice("norm", norm, ("linf", "l2"))
        self.input_range = input_range
        self.batch_size = check_batch_size(batch_size)
        self.verbose = check_choice("verbose", verbose, (0, 1))
        self.history: list[dict] = []
        self.last_report = None
        self._settings = None
        self._first_epoch = None
        self._last_logs: dict = {}

    def on_train_begin(self, logs=None):
        self._settings = target_settings(
            self.model, self.epsilon, self.norm, self.input_range, "CertifyEvery"
        )
        x = check_x(self.model, self.x_val, "x_val")
        check_y(self.y_val, len(x), self.model.outputs[0].shape[-1])
        self._first_epoch = None
        self._last_logs = {}
        _warn_if_monitored_earlier(self)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self._settings is None:  # used outside fit
            self.on_train_begin()
        if self._first_epoch is None:
            self._first_epoch = epoch
        if self._due(epoch):
            self._last_logs = self._certify(epoch)
        if logs is not None:
            logs.update(self._last_logs)

    def _due(self, epoch: int) -> bool:
        """Whether ``epoch`` is certified (see the class docstring)."""
        epochs = (self.params or {}).get("epochs")
        return (
            epoch == self._first_epoch
            or (epoch + 1) % self.every == 0
            or (epochs is not None and epoch == epochs - 1)
        )

    def _certify(self, epoch: int) -> dict:
        from verinet.certify import certify

        epsilon, norm, input_range = self._settings
        start = time.perf_counter()
        report = certify(
            self.model,
            self.x_val,
            self.y_val,
            epsilon,
            method=self.method,
            attack=self.attack,
            norm=norm,
            input_range=input_range,
            batch_size=self.batch_size,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        self.last_report = report
        self.history.append(
            {
                "epoch": int(epoch),
                "epsilon": epsilon,
                "certified_accuracy": report.verified_accuracy,
                "attack_accuracy": report.attack_accuracy,
                "seconds": seconds,
            }
        )
        if self.verbose:
            print(
                f"\nEpoch {epoch + 1}: val_certified_accuracy "
                f"{report.verified_accuracy:.4f}, val_attack_accuracy "
                f"{report.attack_accuracy:.4f} ({report.method}, {norm} epsilon "
                f"{_epsilon_text(epsilon)}, {seconds:.2f} s)",
                flush=True,
            )
        return {
            "val_certified_accuracy": report.verified_accuracy,
            "val_attack_accuracy": report.attack_accuracy,
        }


def _paired(x_val, y_val):
    """``x_val``, ``y_val`` as arrays of one (non-zero) length."""
    try:
        x, y = np.asarray(x_val), np.asarray(y_val)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible
        raise InvalidInputError(
            "x_val and y_val must be arrays (validation inputs and integer "
            f"labels), got {type(x_val).__name__} and {type(y_val).__name__}."
        ) from exc
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise InvalidInputError(
            f"x_val and y_val must hold the same number of samples, got shapes "
            f"{x.shape} and {y.shape}."
        )
    if len(x) == 0:
        raise InvalidInputError("x_val is empty.")
    return x, y


def _checked_method(method):
    """``method`` once a bound-method name is known to be valid (the
    complete methods and method objects pass as they are)."""
    from verinet.bounds.api import resolve_method
    from verinet.certify.certify import COMPLETE_METHODS

    if isinstance(method, str) and method.lower() not in COMPLETE_METHODS:
        resolve_method(method)
    return method


def _epsilon_text(epsilon) -> str:
    if np.ndim(epsilon) == 0:
        return f"{float(epsilon):g}"
    return f"per feature (max {float(np.max(epsilon)):g})"


def _warn_if_monitored_earlier(callback: CertifyEvery) -> None:
    """Warn when a callback listed before ``callback`` monitors its keys.

    Best effort: Keras gives a callback no handle on its ``CallbackList``,
    so this looks for the list among the callers of ``on_train_begin``;
    when it is not found (another caller), nothing is checked.
    """
    frame = sys._getframe(1)
    for _ in range(4):
        if frame is None:
            return
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            break
        frame = frame.f_back
    else:
        return
    listed = list(owner.callbacks)
    if callback not in listed:
        return
    earlier = listed[: listed.index(callback)]
    for other in earlier:
        if getattr(other, "monitor", None) in LOG_KEYS:
            warnings.warn(
                f"{type(other).__name__}(monitor={other.monitor!r}) comes before "
                "CertifyEvery in callbacks=[...]: Keras calls callbacks in list "
                "order, so it reads the logs before CertifyEvery writes "
                f"{other.monitor!r}. Put CertifyEvery first.",
                UserWarning,
                stacklevel=2,
            )
