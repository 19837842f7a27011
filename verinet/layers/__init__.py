"""The layer zoo: Keras layers that state their own bound rules.

What each layer can do beyond its bound rules (stock Keras classes it
converts from, ONNX export and import, batch-norm folding) is declared with
``register`` in its own module; ``registered()`` lists the specs (see
``verinet.layers.registry``).
"""

from verinet import _backend

_backend.ensure_torch_backend()

from keras import Input  # noqa: E402

from verinet.layers.affine import ElementwiseAffine  # noqa: E402
from verinet.layers.batch_norm import BatchNormalization  # noqa: E402
from verinet.layers.conv import Conv2D  # noqa: E402
from verinet.layers.dense import Dense  # noqa: E402
from verinet.layers.merge import Add  # noqa: E402
from verinet.layers.padding import ZeroPadding2D  # noqa: E402
from verinet.layers.permute import Permute  # noqa: E402
from verinet.layers.pooling import AveragePooling2D, MaxPooling2D  # noqa: E402
from verinet.layers.preprocessing import Normalization, Rescaling  # noqa: E402
from verinet.layers.registry import register, registered  # noqa: E402
from verinet.layers.relu import LeakyReLU, ReLU  # noqa: E402
from verinet.layers.reshaping import Dropout, Flatten, Reshape  # noqa: E402
from verinet.layers.residual import ResidualBlock  # noqa: E402
from verinet.layers.smooth import GeLU, Sigmoid, Tanh  # noqa: E402

__all__ = [
    "Add",
    "AveragePooling2D",
    "BatchNormalization",
    "Conv2D",
    "Dense",
    "Dropout",
    "ElementwiseAffine",
    "Flatten",
    "GeLU",
    "Input",
    "LeakyReLU",
    "MaxPooling2D",
    "Normalization",
    "Permute",
    "ReLU",
    "Reshape",
    "Rescaling",
    "ResidualBlock",
    "Sigmoid",
    "Tanh",
    "ZeroPadding2D",
    "register",
    "registered",
]
