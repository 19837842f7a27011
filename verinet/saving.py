"""Loading ``.keras`` files that hold verinet models.

Keras 3 finds a saved class in only two ways: by its registered name
(``"verinet>Sequential"``), which exists once the module defining the class has
been imported, or by importing the recorded module itself, which Keras does
only for modules of the packages ``keras``, ``keras_hub``, ``keras_cv`` and
``keras_nlp``. A file saved from a verinet model records ``verinet.*``
modules, so ``keras.saving.load_model`` finds verinet's classes only after
``import verinet``. ``load_model`` below does that import for you.
"""

from __future__ import annotations

import os

from verinet import _backend

_backend.ensure_torch_backend()

import keras  # noqa: E402

from verinet.errors import InvalidInputError  # noqa: E402


def _register_all() -> None:
    """Import every verinet module that registers a serializable class."""
    import verinet.layers  # noqa: F401
    import verinet.models  # noqa: F401
    import verinet.objectives  # noqa: F401
    import verinet.schedules  # noqa: F401


def load_model(path, custom_objects=None, compile: bool = True, safe_mode=True):
    """Load a ``.keras`` (or legacy ``.h5``) model saved from verinet or Keras.

    ``keras.saving.load_model`` with verinet's layers, models, objectives and
    schedules registered first, so the loaded object is the verinet class it
    was saved as (``vn.Sequential``, ``vn.layers.Dense``...) and can be
    bounded and certified.

    Args:
        path: the ``.keras`` or ``.h5`` file.
        custom_objects: optional dict of your own classes or functions, as
            for ``keras.saving.load_model``.
        compile: whether to restore the training configuration (optimizer,
            loss, robust objective) as well.
        safe_mode: Keras's ``safe_mode`` (refuses lambda deserialization).

    Returns:
        The Keras model.

    Raises:
        InvalidInputError: if ``path`` is not a file, not a ``.keras``/``.h5``
            file, or Keras cannot load it (the message carries Keras's
            reason).

    Example:
        >>> import verinet as vn
        >>> model = vn.load_model("model.keras")
        >>> report = model.certify(x_test, y_test, epsilon=0.05)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidInputError(f"No model file at {path!r}.")
    if not path.lower().endswith((".keras", ".h5")):
        raise InvalidInputError(
            f"{path!r} is not a Keras model file: vn.load_model reads .keras "
            "(or legacy .h5) files; use vn.from_onnx for .onnx files."
        )
    _register_all()
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
        )
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds
        raise InvalidInputError(
            f"Cannot load Keras model {path!r}: {exc} If the model uses classes "
            "of your own, pass them as custom_objects={'Name': Class}."
        ) from exc
