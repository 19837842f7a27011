"""``vn.export_onnx``: write the deployed model as a checked ONNX file.

The graph comes from ``verinet.onnx.writer``; before the file is written,
onnxruntime must reproduce the Keras model's outputs, and a report must
belong to the exported weights.
"""

from __future__ import annotations

import keras
import numpy as np
import onnx
from keras import ops
from onnx import helper

from verinet.bounds.precision import ieee_float32
from verinet.certify.integrity import model_weights_sha256, write_atomic
from verinet.deploy.fold import bound_graph, deploy
from verinet.errors import InvalidInputError, OnnxExportError
from verinet.layers.smooth import GeLU
from verinet.onnx.metadata import build_metadata, weights_sha256
from verinet.onnx.parity import TOLERANCE, output_gap, probe_inputs
from verinet.onnx.writer import build_graph, input_layout

DEFAULT_OPSET = 18
MIN_OPSET = 13


def _check_opset(opset, deployed) -> int:
    if opset is None:
        needs_20 = any(
            isinstance(node.rule, GeLU) and node.rule.approximate
            for node in bound_graph(deployed).nodes[1:]
        )
        return 20 if needs_20 else DEFAULT_OPSET
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise InvalidInputError(
            f"opset must be an integer in [{MIN_OPSET}, {newest}], got {opset!r}."
        )
    return opset


def _sample_inputs(model, sample_inputs):
    shape = tuple(model.inputs[0].shape[1:])
    if sample_inputs is not None:
        from verinet._validation import check_x

        return check_x(model, sample_inputs, "sample_inputs").astype(np.float32)
    return probe_inputs(shape, 4)


def check_onnx_matches(model_bytes: bytes, model, x: np.ndarray, tol=TOLERANCE):
    """Raise unless onnxruntime's outputs match ``model`` on ``x``.

    The check is ``max |onnx - keras| <= tol * max(1, max |keras|)``.

    Returns:
        The largest absolute difference.

    Raises:
        OnnxExportError: when onnxruntime cannot run the graph or disagrees.
    """
    import onnxruntime as ort

    with ieee_float32():  # the reference in full float32 on GPUs too
        expected = np.asarray(
            ops.convert_to_numpy(model(x, training=False)), dtype=np.float64
        )
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        got = np.asarray(session.run(None, {name: x})[0], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds
        raise OnnxExportError(
            f"onnxruntime could not run the exported graph: {exc}"
        ) from exc
    if got.shape != expected.shape:
        raise OnnxExportError(
            f"The exported graph returns shape {got.shape}, Keras {expected.shape}."
        )
    diff, allowed = output_gap(got, expected, tol)
    if not diff <= allowed:
        raise OnnxExportError(
            f"onnxruntime's outputs differ from Keras's by {diff:.3g} "
            f"(allowed {allowed:.3g}); the file was not written."
        )
    return diff


def _match_report(report, model, deployed, digest, allow_unhashed_report) -> str:
    """Which form of the exported weights ``report`` was computed on.

    Returns:
        ``"model"``, ``"deployed"`` (the batch-norm-folded form), ``"onnx"``
        (certified from an ONNX file with exactly these weights) or
        ``"unchecked"`` (a report without a weights hash, allowed).

    Raises:
        InvalidInputError: when the report belongs to other weights, or has
            no hash and ``allow_unhashed_report`` is false.
    """
    if report.onnx_weights_sha256 is not None and report.onnx_weights_sha256 == digest:
        return "onnx"
    if report.weights_sha256 is None:
        if allow_unhashed_report:
            return "unchecked"
        raise InvalidInputError(
            "The report records no weights hash (it was written by verinet 0.1), "
            "so nothing shows it was computed on this model. Certify the model "
            "again, or pass allow_unhashed_report=True (the CLI's "
            "--allow-unhashed-report) to record it unchecked."
        )
    hashes = {"model": model_weights_sha256(model)}
    folded = model_weights_sha256(deployed)
    if folded != hashes["model"]:
        hashes["deployed"] = folded
    for form, value in hashes.items():
        if report.weights_sha256 == value:
            return form
    ours = ", ".join(f"{form} {value[:12]}…" for form, value in hashes.items())
    onnx_note = (
        f" (nor ONNX weights {report.onnx_weights_sha256[:12]}…, the graph written "
        f"here has {digest[:12]}…)"
        if report.onnx_weights_sha256
        else ""
    )
    raise InvalidInputError(
        f"The report was computed on weights {report.weights_sha256[:12]}…, not on "
        f"the model being exported ({ours}){onnx_note}; its certificate would "
        "describe another model. Certify this model and pass that report."
    )


def export_onnx(
    model: keras.Model,
    path,
    report=None,
    opset: int | None = None,
    sample_inputs=None,
    allow_unhashed_report: bool = False,
) -> dict:
    """Export the deployed form of ``model`` as a checked ONNX file.

    The model is deployed first (``vn.deploy``: batch norm folded, dropout
    removed). The ONNX input has the Keras input's layout, channels last
    (``(batch, H, W, C)`` for images), with a dynamic batch axis. Before
    anything is written, onnxruntime runs the graph on ``sample_inputs`` and
    its outputs must match the original Keras model's to ``1e-4`` (relative
    to the output scale when it exceeds 1). The file is written atomically,
    with the usual permissions (``0o666`` less the umask for a new file; an
    existing file keeps its mode).

    A report must belong to the exported weights: its ``weights_sha256``
    must be that of ``model`` or of its deployed form, or its
    ``onnx_weights_sha256`` that of the graph written (a report of
    ``vn.certify_onnx`` on a file exported from this model). A report of
    verinet 0.1 has no hash and is refused unless ``allow_unhashed_report``.

    Metadata (``metadata_props``) records the verinet version, input shape
    and layout and ``verinet.weights_sha256`` (see ``weights_sha256``);
    with a report also its epsilon, norm, input_range, method, dtype,
    attack, verified, clean and attack accuracy, sample count,
    ``verinet.report_sha256`` (``report.content_sha256()``, also written as
    ``report_sha256`` in ``report.json``) and ``verinet.report_weights``
    (how the report was matched: ``model``, ``deployed``, ``onnx`` or
    ``unchecked``).

    Args:
        model: a built Keras model of verinet layers (or one ``vn.convert``
            maps).
        path: where to write the ``.onnx`` file.
        report: optional ``CertificationReport`` of this model.
        opset: ONNX opset (default 18, or 20 when a tanh-approximate GeLU
            needs the ``Gelu`` operator).
        sample_inputs: inputs for the onnxruntime check (default: 4 uniform
            ``[0, 1]`` and 4 standard normal random inputs).
        allow_unhashed_report: record a report that has no weights hash
            (written by verinet 0.1) without checking it belongs to
            ``model``; a report whose hash names other weights is refused
            whatever this says.

    Returns:
        The metadata written, as a dict.

    Raises:
        InvalidInputError: for a report of other weights, an unhashed report
            (unless allowed) or an inconsistent report.
        OnnxExportError: when a layer has no ONNX rule or onnxruntime
            disagrees with Keras (nothing is written then).
        FileWriteError: (an ``OSError``) naming ``path`` when it cannot be
            written.

    Example:
        >>> report = model.certify(x_test, y_test, epsilon=0.05)
        >>> vn.export_onnx(model, "model.onnx", report=report)
    """
    from verinet.certify.report import CertificationReport

    if report is not None:
        if not isinstance(report, CertificationReport):
            raise InvalidInputError(
                f"report must be a CertificationReport, got {type(report).__name__}."
            )
        report.validate()
    deployed = deploy(model)
    opset = _check_opset(opset, deployed)
    proto = build_graph(deployed, opset)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OnnxExportError(f"The exported graph is not valid ONNX: {exc}") from exc
    digest = weights_sha256(proto)
    matched = None
    if report is not None:
        matched = _match_report(report, model, deployed, digest, allow_unhashed_report)
    layout = input_layout(bound_graph(deployed))
    meta = build_metadata(deployed, layout, report, digest, matched)
    helper.set_model_props(proto, meta)
    data = proto.SerializeToString()
    check_onnx_matches(data, model, _sample_inputs(model, sample_inputs))
    write_atomic(path, data)
    return meta
