"""Reading ONNX files: ``load_onnx``, ``vn.from_onnx`` and ``vn.certify_onnx``.

``from_onnx`` builds the bound-aware model (``verinet.onnx.builder``) and
checks it against onnxruntime on random inputs before returning it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import keras
import numpy as np
import onnx

from verinet.bounds.precision import ieee_float32
from verinet.certify.integrity import model_weights_sha256
from verinet.errors import CertificateMismatchWarning, OnnxImportError
from verinet.onnx.builder import Importer, graph_input_shape
from verinet.onnx.metadata import certificate_mismatch, weights_sha256
from verinet.onnx.parity import TOLERANCE, output_gap, probe_inputs


def load_onnx(path, check_certificate: bool = True) -> onnx.ModelProto:
    """Read and validate an ONNX file.

    A file exported by verinet records ``verinet.weights_sha256``; when its
    weights no longer hash to it (they were changed after export), a
    ``CertificateMismatchWarning`` names the file and says that its stored
    certificate figures do not describe these weights. A file without
    verinet metadata (from another exporter) loads silently, and so does an
    ``onnx.ModelProto`` passed in (check one with
    ``verinet.onnx.metadata.certificate_mismatch``).

    Args:
        path: an ``.onnx`` file (or an ``onnx.ModelProto``).
        check_certificate: warn on a weights/metadata mismatch (``read_metadata``
            turns this off: it reports the check as ``weights_sha256_ok``).

    Returns:
        The checked ``onnx.ModelProto``.

    Raises:
        OnnxImportError: when the file is missing, corrupt, truncated or not
            a valid ONNX model.

    Example:
        >>> proto = load_onnx("model.onnx")
    """
    proto, where = _read(path)
    if check_certificate and where is not None:
        _warn_mismatch(certificate_mismatch(proto, where))
    return proto


def _read(path) -> tuple[onnx.ModelProto, str | None]:
    """The checked proto, and how to name its file (``None`` for a proto)."""
    if isinstance(path, onnx.ModelProto):
        proto, where, label = path, None, "The ONNX model"
    else:
        path = os.fspath(path)
        where = label = repr(path)
        if not os.path.isfile(path):
            raise OnnxImportError(f"No ONNX file at {path!r}.")
        try:
            proto = onnx.load(path)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds
            raise OnnxImportError(
                f"{path!r} is not a readable ONNX file (corrupt or truncated?): "
                f"{type(exc).__name__}: {exc}"
            ) from None
    if not proto.graph.node or not proto.graph.output:
        raise OnnxImportError(
            f"{label} has an empty graph (is the file truncated, or not ONNX?)."
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - checker raises several kinds
        raise OnnxImportError(f"{label} is not a valid ONNX model: {exc}") from None
    return proto, where


def _warn_mismatch(message: str | None) -> None:
    if message is not None:
        # stacklevel 3: the line that called load_onnx / from_onnx.
        warnings.warn(message, CertificateMismatchWarning, stacklevel=3)


@dataclass(frozen=True)
class OnnxOrigin:
    """What ``from_onnx`` notes on the model it builds (``_verinet_onnx_origin``).

    ``certify`` copies ``onnx_sha256`` into the report (and ``mismatch`` into
    ``report.extra``) only while the model's weights still hash to
    ``keras_sha256``, i.e. are the ones imported.
    """

    onnx_sha256: str
    keras_sha256: str
    mismatch: str | None


def check_against_onnxruntime(proto, model, tol=TOLERANCE, seed=0) -> float:
    """Compare ``model`` with onnxruntime on random inputs; raise on mismatch.

    Returns:
        The largest absolute difference seen.

    Raises:
        OnnxImportError: when onnxruntime cannot run the graph or the outputs
            differ by more than ``tol * max(1, max |output|)``.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds
        raise OnnxImportError(
            f"onnxruntime cannot load the graph, so the import cannot be checked "
            f"({exc}); pass check=False to skip the check."
        ) from None
    shape = tuple(model.inputs[0].shape[1:])
    batch = graph_input_shape(session_input_info(proto))[1] or 4
    x = probe_inputs(shape, batch, seed)
    name = session.get_inputs()[0].name
    worst = 0.0
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        expected = np.asarray(session.run(None, {name: xb})[0], dtype=np.float64)
        with ieee_float32():  # full float32 on GPUs too
            got = keras.ops.convert_to_numpy(model(xb, training=False))
        got = got.astype(np.float64)
        if got.shape != expected.shape:
            raise OnnxImportError(
                f"The imported model returns shape {got.shape} where onnxruntime "
                f"returns {expected.shape}; please report this as a verinet bug."
            )
        diff, allowed = output_gap(got, expected, tol)
        if not diff <= allowed:
            raise OnnxImportError(
                f"The imported model differs from onnxruntime by {diff:.3g} on "
                "random inputs; please report this as a verinet bug."
            )
        worst = max(worst, diff)
    return worst


def session_input_info(proto):
    """The graph input that is not an initializer."""
    init = {t.name for t in proto.graph.initializer}
    return next(v for v in proto.graph.input if v.name not in init)


def from_onnx(path, check: bool = True) -> keras.Model:
    """Build a bound-aware ``vn.Model`` from an ONNX file.

    Supported: Gemm, MatMul (data @ constant), Add, Sub, Mul and Div by
    constants, Add/Sub of two tensors, Conv (2-D, any padding), Relu,
    LeakyRelu, Sigmoid, Tanh, Gelu and the Erf pattern exporters emit for it,
    Flatten, Reshape, Transpose (layout changes), BatchNormalization
    (inference), AveragePool, MaxPool, GlobalAveragePool, Pad (zeros),
    Identity, Dropout, Cast, and the constant shape arithmetic exporters
    emit (Shape, Gather, Unsqueeze, Concat, ...). The Keras model takes
    inputs in the ONNX input's layout (e.g. ``(batch, C, H, W)``).

    A file exported by verinet whose weights were changed since (they no
    longer hash to its ``verinet.weights_sha256``) raises a
    ``CertificateMismatchWarning`` naming the file (see ``load_onnx``).

    Args:
        path: an ``.onnx`` file (or an ``onnx.ModelProto``).
        check: compare the imported model with onnxruntime on random inputs
            and raise if they differ (recommended: it guards certificates
            against a wrong import).

    Returns:
        A ``vn.Model`` whose outputs match onnxruntime's. ``vn.certify`` of it
        records the file's weights hash (``report.onnx_weights_sha256``), so
        the report can go into ``export_onnx`` of the model the file was
        exported from, and any weights/metadata mismatch
        (``report.extra["certificate_mismatch"]``).

    Raises:
        OnnxImportError: for an unreadable or invalid file, or a node that
            cannot be mapped (naming the node, its op type and the
            supported op types).

    Example:
        >>> model = vn.from_onnx("model.onnx")
        >>> report = model.certify(x_test, y_test, epsilon=0.05)
    """
    proto, where = _read(path)
    mismatch = certificate_mismatch(proto, where or "The ONNX model")
    if where is not None:
        _warn_mismatch(mismatch)
    model = Importer(proto).build()
    if check:
        check_against_onnxruntime(proto, model)
    model._verinet_onnx_origin = OnnxOrigin(
        weights_sha256(proto), model_weights_sha256(model), mismatch
    )
    return model


def certify_onnx(path, x, y, epsilon: float, method="crown", **kwargs):
    """Certify the model in an ONNX file: ``from_onnx`` then ``vn.certify``.

    Args:
        path: the ``.onnx`` file.
        x: inputs in the ONNX input's layout ``(n, *input_shape)``.
        y: integer labels ``(n,)``.
        epsilon: perturbation radius.
        method: bound method, as in ``vn.certify``.
        **kwargs: any other ``vn.certify`` argument (``input_range``,
            ``attack``, ``norm``...).

    Returns:
        A ``CertificationReport``. It records the file's weights hash
        (``onnx_weights_sha256``), so ``export_onnx(model, ..., report=it)``
        accepts it for the model the file was exported from (same opset);
        when the file's weights no longer match its verinet metadata,
        ``report.extra["certificate_mismatch"]`` says so (and a
        ``CertificateMismatchWarning`` is raised).

    Example:
        >>> report = vn.certify_onnx("model.onnx", x_test, y_test, epsilon=0.05,
        ...                          input_range=(0, 1))
    """
    from verinet.certify import certify

    return certify(from_onnx(path), x, y, epsilon, method=method, **kwargs)
