"""Builds a model of a named family from plain arguments (what configs hold)."""
from flax import nnx

from robustwidth.models.resnet import PreActResNet, ResNet
from robustwidth.models.small import CNN, MLP
from robustwidth.models.wide_resnet import WideResNet

FAMILIES = ("wide_resnet", "cnn", "mlp", "resnet", "preact_resnet")


def create_model(family: str, *, width: int, num_classes: int,
                 input_shape: tuple[int, int, int], seed: int, depth: int = 34,
                 base_channels: int = 16, strides: tuple[int, int, int] = (1, 2, 2),
                 cnn_head: str = "pool", parameterization: str = "standard",
                 dtype=None) -> nnx.Module:
  """`input_shape` is (height, width, channels) of one image.

  `depth` is the WideResNet or ResNet depth (ResNet: 18 or 34) or the MLP's number of hidden
  layers; `base_channels` the channel (or, for the MLP, unit) count that `width` multiplies
  (ResNet-18 as published: 64 channels at width 1). The CNN ignores `depth`; only the CNN
  takes `strides` (its three convolutions') and `cnn_head` (`CNN`'s `head`).
  """
  rngs = nnx.Rngs(params=seed)
  common = dict(parameterization=parameterization, dtype=dtype, rngs=rngs)
  if family == "wide_resnet":
    return WideResNet(depth, width, num_classes, in_channels=input_shape[-1],
                      base_channels=base_channels, **common)
  if family == "cnn":
    return CNN(input_shape[-1], num_classes, width=width, base_channels=base_channels,
               strides=tuple(strides), head=cnn_head, input_size=input_shape[:2], **common)
  if family == "mlp":
    return MLP(input_shape, num_classes, width=width, depth=depth, base_units=base_channels,
               **common)
  if family in ("resnet", "preact_resnet"):
    kind = ResNet if family == "resnet" else PreActResNet
    return kind(depth, num_classes, in_channels=input_shape[-1],
                base_channels=base_channels * width, **common)
  raise ValueError(f"Unknown model family {family!r}; use one of {FAMILIES}.")
