"""What an exported ONNX file says about itself: weights hash and metadata.

``verinet.weights_sha256`` lets a file be matched to its certificate:
``read_metadata`` recomputes it from the file's weights and reports whether
they still agree, and ``certificate_mismatch`` says in words when they do
not (``vn.from_onnx`` warns with it).
"""

from __future__ import annotations

import hashlib
import json

import onnx
from onnx import numpy_helper

from verinet.certify.integrity import little_endian_bytes
from verinet.certify.report_files import _setting_json


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
        digest.update(little_endian_bytes(array))
    return digest.hexdigest()


def build_metadata(
    model, layout: str, report, digest: str, report_weights: str | None = None
) -> dict:
    """The ``metadata_props`` of an exported model (strings only).

    Args:
        model: the deployed Keras model.
        layout: the input layout, e.g. ``"NHWC"``.
        report: a ``CertificationReport`` or ``None``.
        digest: ``weights_sha256`` of the graph.
        report_weights: how the report was matched to these weights:
            ``"model"``, ``"deployed"``, ``"onnx"`` or ``"unchecked"``.

    Returns:
        The metadata, ``verinet.*`` keys to strings.

    Example:
        >>> meta = build_metadata(deployed, "NHWC", report, digest, "model")
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
                "verinet.epsilon": json.dumps(_setting_json(report.epsilon)),
                "verinet.norm": report.norm,
                "verinet.input_range": json.dumps(
                    None
                    if report.input_range is None
                    else [_setting_json(v) for v in report.input_range]
                ),
                "verinet.method": report.method,
                "verinet.dtype": str(report.dtype),
                "verinet.attack": str(report.attack),
                "verinet.verified_accuracy": repr(report.verified_accuracy),
                "verinet.clean_accuracy": repr(report.clean_accuracy),
                "verinet.attack_accuracy": repr(report.attack_accuracy),
                "verinet.num_samples": str(report.num_samples),
                "verinet.report_sha256": report.content_sha256(),
                "verinet.report_weights": str(report_weights),
            }
        )
    return meta


def certificate_mismatch(proto: onnx.ModelProto, where: str) -> str | None:
    """Why the verinet metadata of ``proto`` does not describe its weights.

    Args:
        proto: a loaded ONNX model.
        where: how to name it in the message, e.g. ``"'model.onnx'"``.

    Returns:
        ``None`` when the weights hash to the stored
        ``verinet.weights_sha256``, or when the file has no verinet metadata
        (a foreign ONNX file); otherwise a sentence for the user.

    Example:
        >>> certificate_mismatch(onnx.load("model.onnx"), "'model.onnx'")
    """
    meta = {p.key: p.value for p in proto.metadata_props}
    if not any(key.startswith("verinet.") for key in meta):
        return None
    stored = meta.get("verinet.weights_sha256")
    actual = weights_sha256(proto)
    if stored == actual:
        return None
    if "verinet.verified_accuracy" in meta:
        figures = (
            f"the stored certificate figures (verified accuracy "
            f"{meta['verinet.verified_accuracy']} at {meta.get('verinet.norm')} "
            f"epsilon {meta.get('verinet.epsilon')}) do not describe these weights"
        )
    else:
        figures = "they are not the weights verinet exported"
    recorded = "no weights hash" if stored is None else f"weights hash {stored[:12]}…"
    return (
        f"{where} carries verinet metadata with {recorded}, but its weights hash "
        f"to {actual[:12]}…: the weights were changed after export, so {figures}. "
        "Certify this file again (vn.certify_onnx) before relying on it."
    )


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
    from verinet.onnx.importer import load_onnx

    proto = load_onnx(path, check_certificate=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    stored = meta.get("verinet.weights_sha256")
    meta["weights_sha256_ok"] = stored is not None and stored == weights_sha256(proto)
    return meta
