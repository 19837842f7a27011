"""Exception classes raised by verinet."""


class VerinetError(Exception):
    """Base class of every error verinet raises on purpose."""


class BackendError(VerinetError, RuntimeError):
    """Keras was imported with a backend other than torch (verinet needs torch)."""


class UnsupportedLayerError(VerinetError, TypeError):
    """A layer has no bound rule, so the model cannot be bounded or converted."""


class InvalidInputError(VerinetError, ValueError):
    """An argument (data, epsilon, method, range, ...) is malformed."""


class MemoryBudgetError(VerinetError, MemoryError):
    """Not even one specification row of one sample fits the bound engine's
    memory budget (see ``vn.bounds.memory_limit``)."""


class SoundnessError(VerinetError, AssertionError):
    """A bound claimed robustness that an attack refuted: a bug, never hidden."""


class OnnxImportError(VerinetError, ValueError):
    """An ONNX file is unreadable, malformed, or uses an operator or pattern
    that ``vn.from_onnx`` cannot map onto bound-aware layers."""


class OnnxExportError(VerinetError, RuntimeError):
    """An ONNX export failed, or onnxruntime disagreed with the Keras model."""


class VnnlibError(VerinetError, ValueError):
    """A VNN-LIB property file is malformed or uses an unsupported construct."""


class FileWriteError(VerinetError, OSError):
    """A file (an ONNX model, a report) could not be written.

    The message names the path the caller asked for (never a temporary file)
    and the reason; ``errno`` is that of the failed system call.
    """


class CertificateMismatchWarning(UserWarning):
    """An ONNX file's weights differ from those verinet hashed at export, so
    the certificate figures stored in its metadata do not describe them."""
