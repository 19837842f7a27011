"""Deployment: batch-norm folding (ONNX export and import live in ``verinet.onnx``).

Example:
    >>> deployed = vn.deploy(model)
    >>> vn.export_onnx(model, "model.onnx", report=report)
    >>> vn.certify_onnx("model.onnx", x_test, y_test, epsilon=0.05)
"""

from verinet.deploy.fold import deploy

# The ONNX names, kept here for older imports, load on first use:
# verinet.onnx itself imports verinet.deploy.fold.
_ONNX_NAMES = frozenset(
    {
        "SUPPORTED_OPS",
        "certify_onnx",
        "export_onnx",
        "from_onnx",
        "read_metadata",
        "weights_sha256",
    }
)


def __getattr__(name: str):
    if name in _ONNX_NAMES:
        import verinet.onnx

        return getattr(verinet.onnx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SUPPORTED_OPS",
    "certify_onnx",
    "deploy",
    "export_onnx",
    "from_onnx",
    "read_metadata",
    "weights_sha256",
]
