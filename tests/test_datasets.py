"""Offline data loaders: digits and Fashion-MNIST IDX files."""

import gzip
import importlib

import numpy as np
import pytest

import verinet as vn

fm = importlib.import_module("verinet.datasets.fashion_mnist")


def test_digits_split_is_deterministic_and_scaled():
    (x_train, y_train), (x_test, y_test) = vn.datasets.digits()
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert set(np.unique(y_train)) == set(range(10))
    (again, _), _ = vn.datasets.digits()
    np.testing.assert_array_equal(x_train, again)


def _write_idx(path, array, compress):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_local_idx_files(tmp_path, rng, compress):
    images = rng.integers(0, 256, (5, 28, 28))
    labels = rng.integers(0, 10, 5)
    for stem, array in [
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", labels),
        ("t10k-images-idx3-ubyte", images[:2]),
        ("t10k-labels-idx1-ubyte", labels[:2]),
    ]:
        _write_idx(tmp_path / stem, array, compress)
    (x_train, y_train), (x_test, y_test) = vn.datasets.fashion_mnist(tmp_path)
    assert x_train.shape == (5, 28, 28, 1) and x_test.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(x_train[..., 0], images / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_train, labels)
    assert y_test.dtype == np.int64


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "a")
    monkeypatch.setattr(fm, "KERAS_DIR", tmp_path / "b")
    with pytest.raises(vn.InvalidInputError, match="dataset-fashion-mnist"):
        vn.datasets.fashion_mnist()


def test_truncated_idx_file_is_refused(tmp_path, rng):
    _write_idx(tmp_path / "x", rng.integers(0, 256, (3, 4)), compress=False)
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-2])
    with pytest.raises(vn.InvalidInputError, match="truncated"):
        vn.datasets.read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"not an idx file")
    with pytest.raises(vn.InvalidInputError, match="IDX"):
        vn.datasets.read_idx(tmp_path / "y")
