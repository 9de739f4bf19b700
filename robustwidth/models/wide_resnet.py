"""WideResNet, the TRADES variant the paper trains (docs/paper.md §5).

Pre-activation basic blocks, stage channels [c, c·k, 2c·k, 4c·k] with c = 16 in the paper,
(depth − 4) / 6 blocks per stage, strides 1/2/2, final BN-ReLU, global average pooling (the 8×8
pool of the reference on 32×32 inputs) and a linear head. Convolutions use the He fan-out normal
init, BatchNorm γ = 1, β = 0, and the head PyTorch's default uniform init with a zero bias.
BatchNorm is PyTorch's (`layers.BatchNorm`: momentum 0.1, epsilon 1e-5, the unbiased variance
in the running statistics).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from robustwidth.models.layers import BatchNorm, Conv, Dense, Parameterization


class BasicBlock(nnx.Module):
  """BN-ReLU-conv3×3-BN-ReLU-conv3×3 with an identity or a 1×1 projection shortcut.

  As in the reference, a projection shortcut reads the pre-activated input, an identity
  shortcut the raw input.
  """

  def __init__(self, in_channels: int, out_channels: int, stride: int, *,
               parameterization: Parameterization, dtype, rngs: nnx.Rngs):
    conv = dict(fan="fan_out", parameterization=parameterization, dtype=dtype, rngs=rngs)
    self.bn1 = BatchNorm(in_channels, dtype=dtype)
    self.conv1 = Conv(in_channels, out_channels, 3, stride=stride, padding=1, **conv)
    self.bn2 = BatchNorm(out_channels, dtype=dtype)
    self.conv2 = Conv(out_channels, out_channels, 3, padding=1, **conv)
    self.shortcut = (Conv(in_channels, out_channels, 1, stride=stride, **conv)
                     if in_channels != out_channels else None)

  def __call__(self, x, train: bool):
    pre = jax.nn.relu(self.bn1(x, use_running_average=not train))
    out = self.conv1(pre)
    out = jax.nn.relu(self.bn2(out, use_running_average=not train))
    out = self.conv2(out)
    residual = x if self.shortcut is None else self.shortcut(pre)
    return residual + out


class WideResNet(nnx.Module):
  """WRN-`depth`-`width`; `WideResNet(34, 10)` is the paper's WRN-34-10 (46,160,474 params)."""

  def __init__(self, depth: int, width: int, num_classes: int = 10, *, in_channels: int = 3,
               base_channels: int = 16, parameterization: Parameterization = "standard",
               dtype=None, rngs: nnx.Rngs):
    if depth < 10 or (depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), "
                       f"got {depth}.")
    if width < 1 or base_channels < 1:
      raise ValueError(f"WideResNet width and base_channels must be >= 1, got width={width}, "
                       f"base_channels={base_channels}.")
    self.depth, self.width = depth, width
    blocks_per_stage = (depth - 4) // 6
    channels = [base_channels, base_channels * width, 2 * base_channels * width,
                4 * base_channels * width]
    common = dict(parameterization=parameterization, dtype=dtype, rngs=rngs)
    self.stem = Conv(in_channels, channels[0], 3, padding=1, fan="fan_out", **common)
    blocks = []
    for stage, stride in enumerate((1, 2, 2)):
      for i in range(blocks_per_stage):
        blocks.append(BasicBlock(channels[stage] if i == 0 else channels[stage + 1],
                                 channels[stage + 1], stride if i == 0 else 1, **common))
    self.blocks = nnx.List(blocks)
    self.bn = BatchNorm(channels[3], dtype=dtype)
    self.head = Dense(channels[3], num_classes, gain=1 / 3, distribution="uniform", **common)

  def __call__(self, x, train: bool = False):
    out = self.stem(x)
    for block in self.blocks:
      out = block(out, train)
    out = jax.nn.relu(self.bn(out, use_running_average=not train))
    out = jnp.mean(out, axis=(1, 2))
    return self.head(out).astype(jnp.float32)
