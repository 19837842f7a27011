"""Selects Keras's torch backend before Keras is imported."""

import os
import sys

from verinet.errors import BackendError

__all__ = ["BackendError", "ensure_torch_backend"]


def ensure_torch_backend() -> None:
    """Set ``KERAS_BACKEND=torch`` when unset and check an imported Keras.

    Raises:
        BackendError: if ``keras`` is already imported with another backend,
            or ``KERAS_BACKEND`` names another backend.
    """
    wanted = os.environ.setdefault("KERAS_BACKEND", "torch")
    if wanted != "torch":
        raise BackendError(
            f"verinet runs on Keras's torch backend, but KERAS_BACKEND={wanted!r}. "
            "Set KERAS_BACKEND=torch (or unset it) before importing verinet."
        )
    if "keras" in sys.modules:
        import keras

        active = keras.backend.backend()
        if active != "torch":
            raise BackendError(
                f"Keras was already imported with the {active!r} backend; verinet "
                "needs 'torch'. Import verinet before keras, or set "
                "KERAS_BACKEND=torch in the environment."
            )
