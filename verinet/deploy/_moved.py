"""The warning of the old ``verinet.deploy`` module paths (now ``verinet.onnx``)."""

import warnings


def warn_moved(old: str, new: str) -> None:
    """Warn, at the importer's line, that module ``old`` moved to ``new``."""
    warnings.warn(
        f"{old} is deprecated; import from {new} instead.",
        DeprecationWarning,
        stacklevel=3,
    )
