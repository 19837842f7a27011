"""What an exported ONNX file says about itself: weights hash and metadata.

``verinet.weights_sha256`` lets a file be matched to its certificate:
``read_metadata`` recomputes it from the file's weights and reports whether
they still agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper


def weights_sha256(model_proto: onnx.ModelProto) -> str:
    """SHA-256 of an ONNX graph's weights (initializers, in graph order).

    Each initializer contributes its name, element type, shape and its values
    as little-endian bytes, so the digest changes with any weight and is the
    same for every copy of the file, whatever its metadata.

    Args:
        model_proto: a loaded ONNX model.

    Returns:
        The hex digest.

    Example:
        >>> digest = weights_sha256(onnx.load("model.onnx"))
    """
    digest = hashlib.sha256()
    for tensor in model_proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        digest.update(tensor.name.encode())
        digest.update(str(tensor.data_type).encode())
        digest.update(json.dumps(list(array.shape)).encode())
        digest.update(
            np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        )
    return digest.hexdigest()


def build_metadata(model, layout: str, report, digest: str) -> dict:
    """The ``metadata_props`` of an exported model (strings only).

    Args:
        model: the deployed Keras model.
        layout: the input layout, e.g. ``"NHWC"``.
        report: a ``CertificationReport`` or ``None``.
        digest: ``weights_sha256`` of the graph.
    """
    from verinet import __version__

    shape = list(model.inputs[0].shape[1:])
    meta = {
        "verinet.version": __version__,
        "verinet.input_shape": json.dumps(shape),
        "verinet.input_layout": layout,
        "verinet.weights_sha256": digest,
    }
    if report is not None:
        meta.update(
            {
                "verinet.epsilon": repr(float(report.epsilon)),
                "verinet.norm": report.norm,
                "verinet.input_range": json.dumps(
                    None if report.input_range is None else list(report.input_range)
                ),
                "verinet.method": report.method,
                "verinet.verified_accuracy": repr(report.verified_accuracy),
                "verinet.clean_accuracy": repr(report.clean_accuracy),
                "verinet.attack_accuracy": repr(report.attack_accuracy),
                "verinet.num_samples": str(report.num_samples),
                "verinet.report_sha256": hashlib.sha256(
                    report.to_json().encode()
                ).hexdigest(),
            }
        )
    return meta


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so
    that readers never see a half-written file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".verinet-", suffix=".onnx.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_metadata(path) -> dict:
    """The verinet metadata of an exported ONNX file, checked against it.

    Args:
        path: the ``.onnx`` file.

    Returns:
        The ``metadata_props`` as a dict, plus ``"weights_sha256_ok"``: whether
        the file's weights still hash to ``verinet.weights_sha256``.

    Example:
        >>> meta = read_metadata("model.onnx")
        >>> meta["verinet.verified_accuracy"], meta["weights_sha256_ok"]
    """
    from verinet.deploy.onnx_import import load_onnx

    proto = load_onnx(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    stored = meta.get("verinet.weights_sha256")
    meta["weights_sha256_ok"] = stored is not None and stored == weights_sha256(proto)
    return meta
