"""What keeps a certificate honest: weight hashes, exact set membership and
files that are never half-written.

- ``model_weights_sha256`` ties a report to the Keras weights it was
  computed on, so ``export_onnx`` can refuse a report of another model.
- ``in_perturbation_set`` is the one exact membership test used both when
  ``certify`` keeps a counterexample and when a report is loaded.
- ``write_atomic`` writes every ONNX file and report.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat

import numpy as np

from verinet.errors import FileWriteError

#: Prefix of the Keras weights digest: a new encoding gets a new prefix.
_WEIGHTS_HASH_VERSION = b"verinet.keras-weights/1\n"


def little_endian_bytes(array: np.ndarray) -> bytes:
    """The values of ``array`` as C-ordered little-endian bytes.

    Args:
        array: any numeric numpy array.

    Returns:
        Bytes that are the same on every machine for the same values.

    Example:
        >>> little_endian_bytes(np.arange(2, dtype=">i4"))
        b'\\x00\\x00\\x00\\x00\\x01\\x00\\x00\\x00'
    """
    array = np.ascontiguousarray(array)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def model_weights_sha256(model) -> str:
    """SHA-256 of a Keras model's weights: values, shapes and dtypes.

    The weights are taken in ``model.weights`` order (Keras's stable order:
    layer by layer, each layer's variables in creation order, trainable and
    non-trainable alike, e.g. batch-norm moving statistics). Each contributes
    ``json.dumps([dtype, shape])`` and its values as little-endian bytes
    (``little_endian_bytes``), after the prefix ``verinet.keras-weights/1``.
    Names are left out, so a model reloaded from ``.keras`` or rebuilt with
    other layer names but the same weights hashes the same; optimizer state
    and random-seed variables are not weights and do not count.

    Args:
        model: a built Keras model.

    Returns:
        The hex digest.

    Example:
        >>> report = vn.certify(model, x, y, 0.05)
        >>> report.weights_sha256 == model_weights_sha256(model)
        True
    """
    from keras import ops

    digest = hashlib.sha256(_WEIGHTS_HASH_VERSION)
    for variable in model.weights:
        array = np.asarray(ops.convert_to_numpy(variable))
        digest.update(json.dumps([str(array.dtype), list(array.shape)]).encode())
        digest.update(little_endian_bytes(array))
    return digest.hexdigest()


def rows(array: np.ndarray) -> np.ndarray:
    """``array`` as ``(samples, features)``, also when it has no samples.

    Example:
        >>> rows(np.zeros((0, 8, 8, 1))).shape
        (0, 64)
    """
    return array.reshape(array.shape[0], int(np.prod(array.shape[1:])))


def in_perturbation_set(points, x, epsilon: float, norm: str, input_range=None):
    """Which ``points`` lie in the perturbation set of ``x``, exactly.

    The test has no tolerance: the stored values (e.g. float32) are widened
    to float64, and a point is inside when it is finite, ``max |p - x| <=
    epsilon`` (``"linf"``) or ``sqrt(sum (p - x)**2) <= epsilon`` (``"l2"``),
    and every coordinate lies in ``input_range``.

    Args:
        points: ``(n, *shape)`` candidate inputs.
        x: ``(n, *shape)`` clean inputs.
        epsilon: the radius.
        norm: ``"linf"`` or ``"l2"``.
        input_range: ``(low, high)`` or ``None``.

    Returns:
        A boolean array ``(n,)``.

    Example:
        >>> in_perturbation_set(x + 0.1, x, 0.1, "linf")
    """
    from verinet.bounds.perturbation import NORMS

    return NORMS[norm](epsilon, input_range).contains(points, x)


def write_atomic(path, data: bytes, name: str | None = None) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file.

    The bytes go to a hidden temporary file in the same folder, are flushed
    to disk, and the file is renamed over ``path``. A new file gets the usual
    mode (``0o666`` less the umask, as ``open`` gives); an existing file
    keeps its mode. On any failure the temporary file is removed and
    ``path`` is left as it was.

    Args:
        path: the destination (``str`` or path-like).
        data: the file's contents.
        name: how error messages name the file (default: ``path`` quoted).

    Raises:
        FileWriteError: (an ``OSError``) when the file cannot be written; the
            message names ``path`` (or ``name``) and the reason, never the
            temporary file.

    Example:
        >>> write_atomic("model.onnx", proto.SerializeToString())
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        info = os.stat(path)
        mode = stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else None
    except OSError:
        mode = None
    temp = os.path.join(
        folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.verinet-tmp"
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(temp, flags, 0o666)  # the kernel applies the umask
    except OSError as exc:
        raise _write_error(path, name, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise _write_error(path, name, exc) from None
        raise


def _write_error(path: str, name: str | None, exc: OSError) -> FileWriteError:
    """A ``FileWriteError`` naming ``path`` (never the temporary file)."""
    folder = os.path.dirname(os.path.abspath(path))
    reason = exc.strerror or type(exc).__name__
    if not os.path.isdir(folder):
        hint = f"the folder {folder!r} does not exist; create it or choose another"
    elif os.path.isdir(path):
        hint = "it is a folder; give a file name"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"check that the folder {folder!r} is writable"
    else:
        hint = "check the path and the free space"
    error = FileWriteError(f"Cannot write {name or repr(path)}: {reason} ({hint}).")
    error.errno = exc.errno  # str(error) stays the message above
    return error
