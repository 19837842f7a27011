"""Fashion-MNIST from local IDX files (never downloaded unless asked)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from verinet.errors import InvalidInputError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_DIR = Path(os.path.expanduser("~/.keras/datasets/fashion-mnist"))
_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a uint8 array.

    Raises:
        InvalidInputError: when the file is not a well-formed uint8 IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"Cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise InvalidInputError(f"{path} is not a uint8 IDX file.")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    if len(data) != header + int(np.prod(shape)):
        raise InvalidInputError(f"{path} is truncated or has trailing data.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).exists():
            return directory / name
    return None


def fashion_mnist(path=None, download: bool = False):
    """Load Fashion-MNIST as float32 images in ``[0, 1]``, shape ``(n, 28, 28, 1)``.

    Looks in ``path`` if given, else in ``/usr/share/datasets/fashion-mnist``
    (Debian: ``apt install dataset-fashion-mnist``), else in Keras's cache
    ``~/.keras/datasets/fashion-mnist``. Downloads with Keras only when
    ``download=True``.

    Args:
        path: a folder holding the four IDX files (``.gz`` or not).
        download: allow Keras's downloader when no local copy exists.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` with int64 labels.

    Raises:
        InvalidInputError: when no local copy is found and ``download`` is False.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = vn.datasets.fashion_mnist()
    """
    folders = [Path(path)] if path is not None else [DEBIAN_DIR, KERAS_DIR]
    for folder in folders:
        found = {key: _find(folder, stem) for key, stem in _FILES.items()}
        if all(found.values()):
            arrays = {key: read_idx(p) for key, p in found.items()}
            break
    else:
        if not download:
            raise InvalidInputError(
                "Fashion-MNIST not found in "
                + " or ".join(str(f) for f in folders)
                + ". Install the Debian package dataset-fashion-mnist, or pass "
                "download=True to fetch it with Keras."
            )
        import keras

        (xa, ya), (xb, yb) = keras.datasets.fashion_mnist.load_data()
        arrays = {"x_train": xa, "y_train": ya, "x_test": xb, "y_test": yb}

    def images(a):
        return (a.astype(np.float32) / 255.0)[..., None]

    return (
        (images(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
        (images(arrays["x_test"]), arrays["y_test"].astype(np.int64)),
    )
