"""Dense and convolution layers under standard or NTK parameterization.

Flax's own layers cover only the standard parameterization; the width study needs both with the
same parameter layout, so the two are written once here.

    standard:  w ~ D(variance = gain / fan),  y = w · x + b
    ntk:       w ~ D(variance = 1),           y = sqrt(gain / fan) · (w · x) + b

At initialization both give the same output distribution; they differ in how gradients (and so
the neural tangent kernel) scale with width. Convolutions pad explicitly and symmetrically, as
PyTorch does, so that weights move between the two frameworks unchanged; the convolution
itself, with its backend-specific derivative, is `conv.conv2d`.
"""
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from robustwidth.models.conv import conv2d

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
    y = conv2d(x.astype(dtype), self.kernel[...].astype(dtype), self.stride, self.padding)
    y = y * jnp.asarray(self.multiplier, dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y


BATCH_NORM_MOMENTUM = 0.1  # PyTorch's convention: running ← (1 − m) · running + m · batch


class BatchNorm(nnx.Module):
  """BatchNorm over all axes but the last, with PyTorch's BatchNorm2d semantics.

  Training mode normalizes with the batch mean and biased variance and folds the batch mean
  and the *unbiased* variance (n / (n − 1), n values per channel) into the running statistics
  with momentum 0.1, as PyTorch does, so statistics exported through `interop` mean there what
  they mean here. Evaluation mode normalizes with the running statistics. The statistics are
  computed in float32 whatever the compute dtype.
  """

  def __init__(self, channels: int, *, epsilon: float = 1e-5, dtype=None):
    self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((channels,), jnp.float32))
    self.epsilon = epsilon
    self.dtype = dtype

  def __call__(self, x, *, use_running_average: bool):
    dtype = self.dtype or x.dtype
    if use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axis=axes)
      var = jnp.mean(jnp.square(x32 - mean), axis=axes)
      n = x.size // x.shape[-1]
      m = BATCH_NORM_MOMENTUM
      self.mean[...] = (1 - m) * self.mean[...] + m * mean
      self.var[...] = (1 - m) * self.var[...] + m * var * (n / max(n - 1, 1))
    inverse = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
    return ((x.astype(jnp.float32) - mean) * inverse + self.bias[...]).astype(dtype)


def fold_batch_statistics(before: nnx.State, passes) -> nnx.State:
  """The running statistics after folding in, in order, the batch statistics of training-mode
  passes that each started from `before` (`passes`: the model state after each).

  A pass's running statistics are (1 − m)·before + m·b for its batch statistics b, so m·b is
  recovered exactly up to float32 rounding, and a pass may be folded in more than once (the
  TRADES reference's second clean pass) without running it again. Every leaf of the state
  must be a BatchNorm running statistic.
  """
  m = BATCH_NORM_MOMENTUM
  result = before
  for after in passes:
    result = jax.tree.map(lambda r, a, b: (1 - m) * r + (a - (1 - m) * b), result, after, before)
  return result
