"""Small width families for CPU experiments and NTK theory: a ReLU MLP and a ReLU CNN.

Neither has BatchNorm, so each is exactly the kind of network the NTK results are stated for.
`width` multiplies every hidden layer's size; the readout layer has gain 1, hidden layers the
ReLU gain 2, under either parameterization (see `layers`).
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from robustwidth.models.layers import Conv, Dense, Parameterization


HEADS = ("pool", "flatten")


def _check_width(width: int) -> None:
  if width < 1:
    raise ValueError(f"width must be a positive integer, got {width}.")


class MLP(nnx.Module):
  """Flatten → `depth` × (Dense(base_units · width) → ReLU) → Dense(num_classes)."""

  def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, width: int,
               depth: int = 2, base_units: int = 64,
               parameterization: Parameterization = "standard", dtype=None, rngs: nnx.Rngs):
    _check_width(width)
    self.width = width
    common = dict(parameterization=parameterization, dtype=dtype, rngs=rngs)
    sizes = [math.prod(input_shape)] + [base_units * width] * depth
    self.hidden = nnx.List([Dense(a, b, **common) for a, b in zip(sizes[:-1], sizes[1:])])
    self.head = Dense(sizes[-1], num_classes, gain=1.0, **common)

  def __call__(self, x, train: bool = False):
    del train  # No train-mode behaviour; kept so that every model has one call signature.
    out = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      out = jax.nn.relu(layer(out))
    return self.head(out).astype(jnp.float32)


class CNN(nnx.Module):
  """Three 3×3 conv-ReLU layers with c·width, 2c·width, 4c·width channels (strides 1, 2, 2
  unless given: (2, 2, 2) makes a 28×28 image's convolutions about 4× cheaper) and a linear
  head on the globally average-pooled features (`head="pool"`) or on all of them
  (`head="flatten"`, which keeps where each feature is: more capacity at few channels)."""

  def __init__(self, in_channels: int, num_classes: int, *, width: int, base_channels: int = 16,
               strides: tuple[int, int, int] = (1, 2, 2), head: str = "pool",
               input_size: tuple[int, int] = (32, 32),
               parameterization: Parameterization = "standard", dtype=None, rngs: nnx.Rngs):
    _check_width(width)
    self.width = width
    common = dict(parameterization=parameterization, dtype=dtype, rngs=rngs)
    channels = [in_channels] + [base_channels * width * m for m in (1, 2, 4)]
    self.convs = nnx.List([
        Conv(a, b, 3, stride=s, padding=1, use_bias=True, **common)
        for a, b, s in zip(channels[:-1], channels[1:], strides)])
    if head not in HEADS:
      raise ValueError(f"CNN head {head!r}: use one of {HEADS}.")
    self.flatten = head == "flatten"
    features = channels[-1]
    if self.flatten:
      height, width_px = input_size
      for s in strides:
        height, width_px = -(-height // s), -(-width_px // s)
      features *= height * width_px
    self.head = Dense(features, num_classes, gain=1.0, **common)

  def __call__(self, x, train: bool = False):
    del train
    out = x
    for conv in self.convs:
      out = jax.nn.relu(conv(out))
    out = out.reshape(out.shape[0], -1) if self.flatten else jnp.mean(out, axis=(1, 2))
    return self.head(out).astype(jnp.float32)
