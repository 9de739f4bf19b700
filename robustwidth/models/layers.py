"""Dense and convolution layers under standard or NTK parameterization.

Flax's own layers cover only the standard parameterization; the width study needs both with the
same parameter layout, so the two are written once here.

    standard:  w ~ D(variance = gain / fan),  y = w · x + b
    ntk:       w ~ D(variance = 1),           y = sqrt(gain / fan) · (w · x) + b

At initialization both give the same output distribution; they differ in how gradients (and so
the neural tangent kernel) scale with width. Convolutions pad explicitly and symmetrically, as
PyTorch does, so that weights move between the two frameworks unchanged.
"""
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

Parameterization = Literal["standard", "ntk"]
PARAMETERIZATIONS = ("standard", "ntk")


def check_parameterization(parameterization: str) -> None:
  if parameterization not in PARAMETERIZATIONS:
    raise ValueError(
        f"Unknown parameterization {parameterization!r}; use one of {PARAMETERIZATIONS}.")


def _unit_variance_sample(key, shape, distribution: str):
  if distribution == "normal":
    return jax.random.normal(key, shape, jnp.float32)
  # Uniform on [-sqrt(3), sqrt(3)] has unit variance.
  return jax.random.uniform(key, shape, jnp.float32, minval=-(3**0.5), maxval=3**0.5)


class _Scaled(nnx.Module):
  """Holds a kernel whose effective variance is gain / fan under either parameterization."""

  def _init_kernel(self, shape, fan, gain, distribution, parameterization, rngs):
    check_parameterization(parameterization)
    kernel = _unit_variance_sample(rngs.params(), shape, distribution)
    multiplier = (gain / fan) ** 0.5
    if parameterization == "standard":
      self.kernel = nnx.Param(kernel * multiplier)
      self.multiplier = 1.0
    else:
      self.kernel = nnx.Param(kernel)
      self.multiplier = multiplier


class Dense(_Scaled):
  """Fully connected layer; `gain=1/3, distribution="uniform"` is PyTorch's default init."""

  def __init__(self, in_features: int, out_features: int, *, gain: float = 2.0,
               distribution: str = "normal", use_bias: bool = True,
               parameterization: Parameterization = "standard", dtype=None, rngs: nnx.Rngs):
    self._init_kernel((in_features, out_features), in_features, gain, distribution,
                      parameterization, rngs)
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x):
    dtype = self.dtype or x.dtype
    y = jnp.dot(x.astype(dtype), self.kernel[...].astype(dtype))
    y = y * jnp.asarray(self.multiplier, dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y


class Conv(_Scaled):
  """2-D convolution (NHWC, HWIO kernel) with symmetric padding `padding` on each side.

  `fan="fan_out"` gives the He fan-out init of the TRADES WideResNet (std sqrt(2 / (k·k·out))).
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
               padding: int = 0, fan: Literal["fan_in", "fan_out"] = "fan_in",
               gain: float = 2.0, use_bias: bool = False,
               parameterization: Parameterization = "standard", dtype=None, rngs: nnx.Rngs):
    receptive = kernel_size * kernel_size
    fan_size = receptive * (in_channels if fan == "fan_in" else out_channels)
    self._init_kernel((kernel_size, kernel_size, in_channels, out_channels), fan_size, gain,
                      "normal", parameterization, rngs)
    self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32)) if use_bias else None
    self.stride = stride
    self.padding = padding
    self.dtype = dtype

  def __call__(self, x):
    dtype = self.dtype or x.dtype
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), self.kernel[...].astype(dtype),
        window_strides=(self.stride, self.stride),
        padding=((self.padding, self.padding), (self.padding, self.padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y * jnp.asarray(self.multiplier, dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y
