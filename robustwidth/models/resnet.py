"""ResNet-18/34 and PreActResNet-18/34 (He et al. 2016) for CIFAR, as RobustBench defines them,
and input mean/std normalization inside a model.

Both: a 3×3 stem of c channels (c = 64 in the paper; `width` multiplies it), four stages of
basic blocks with c, 2c, 4c, 8c channels and strides 1/2/2/2, global average pooling (the
reference's 4×4 pool on 32×32 inputs) and a linear head; a projection shortcut (1×1
convolution) wherever the stride or the channels change.

ResNet (post-activation): stem conv-BN-ReLU; block conv-BN-ReLU-conv-BN, plus the shortcut
(its convolution followed by BN), then ReLU.
PreActResNet: stem conv; block BN-ReLU-conv-BN-ReLU-conv plus the shortcut, which reads the
raw input (RobustBench's `PreActBlock`) or the pre-activated one (`PreActBlockV2`, as in the
WideResNet); a final BN-ReLU before the pool where `final_bn` (RobustBench's `bn_before_fc`).

Initialization follows PyTorch's defaults loosely (He fan-in normal); these models exist mainly
to evaluate published weights.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from robustwidth.models.layers import BatchNorm, Conv, Dense, Parameterization

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _check_depth(depth: int) -> tuple[int, ...]:
  if depth not in STAGE_BLOCKS:
    raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)} (basic blocks), got "
                     f"{depth}.")
  return STAGE_BLOCKS[depth]


def _stages(depth: int, base: int):
  """(in channels, out channels, stride) of every block in order."""
  blocks, channels = [], base
  for stage, count in enumerate(_check_depth(depth)):
    out = base * 2 ** stage
    for i in range(count):
      blocks.append((channels, out, (1 if stage == 0 else 2) if i == 0 else 1))
      channels = out
  return blocks


class BasicBlock(nnx.Module):
  """conv-BN-ReLU-conv-BN + shortcut, then ReLU."""

  def __init__(self, in_channels: int, out_channels: int, stride: int, *, common, rngs):
    dtype = common["dtype"]
    self.conv1 = Conv(in_channels, out_channels, 3, stride=stride, padding=1, **common)
    self.bn1 = BatchNorm(out_channels, dtype=dtype)
    self.conv2 = Conv(out_channels, out_channels, 3, padding=1, **common)
    self.bn2 = BatchNorm(out_channels, dtype=dtype)
    projected = stride != 1 or in_channels != out_channels
    self.shortcut = Conv(in_channels, out_channels, 1, stride=stride, **common) if projected \
        else None
    self.shortcut_bn = BatchNorm(out_channels, dtype=dtype) if projected else None

  def __call__(self, x, train: bool):
    out = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    out = self.bn2(self.conv2(out), use_running_average=not train)
    residual = x if self.shortcut is None else self.shortcut_bn(
        self.shortcut(x), use_running_average=not train)
    return jax.nn.relu(out + residual)


class PreActBlock(nnx.Module):
  """BN-ReLU-conv-BN-ReLU-conv + shortcut (of the raw or the pre-activated input)."""

  def __init__(self, in_channels: int, out_channels: int, stride: int, *,
               preactivated_shortcut: bool, common, rngs):
    dtype = common["dtype"]
    self.bn1 = BatchNorm(in_channels, dtype=dtype)
    self.conv1 = Conv(in_channels, out_channels, 3, stride=stride, padding=1, **common)
    self.bn2 = BatchNorm(out_channels, dtype=dtype)
    self.conv2 = Conv(out_channels, out_channels, 3, padding=1, **common)
    self.shortcut = (Conv(in_channels, out_channels, 1, stride=stride, **common)
                     if stride != 1 or in_channels != out_channels else None)
    self.preactivated_shortcut = preactivated_shortcut

  def __call__(self, x, train: bool):
    pre = jax.nn.relu(self.bn1(x, use_running_average=not train))
    out = self.conv1(pre)
    out = self.conv2(jax.nn.relu(self.bn2(out, use_running_average=not train)))
    if self.shortcut is None:
      return out + x
    return out + self.shortcut(pre if self.preactivated_shortcut else x)


class ResNet(nnx.Module):
  """ResNet-`depth` (18 or 34) of post-activation basic blocks; `ResNet(18)` is RobustBench's
  ResNet18 (11,173,962 parameters for 10 classes)."""

  def __init__(self, depth: int = 18, num_classes: int = 10, *, in_channels: int = 3,
               base_channels: int = 64, parameterization: Parameterization = "standard",
               dtype=None, rngs: nnx.Rngs):
    self.depth = depth
    common = dict(parameterization=parameterization, dtype=dtype, rngs=rngs)
    self.stem = Conv(in_channels, base_channels, 3, padding=1, **common)
    self.stem_bn = BatchNorm(base_channels, dtype=dtype)
    self.blocks = nnx.List([BasicBlock(a, b, s, common=common, rngs=rngs)
                            for a, b, s in _stages(depth, base_channels)])
    self.head = Dense(8 * base_channels, num_classes, gain=1 / 3, distribution="uniform",
                      **common)

  def __call__(self, x, train: bool = False):
    out = jax.nn.relu(self.stem_bn(self.stem(x), use_running_average=not train))
    for block in self.blocks:
      out = block(out, train)
    return self.head(jnp.mean(out, axis=(1, 2))).astype(jnp.float32)


class PreActResNet(nnx.Module):
  """PreActResNet-`depth` (18 or 34); `PreActResNet(18)` is RobustBench's PreActResNet18."""

  def __init__(self, depth: int = 18, num_classes: int = 10, *, in_channels: int = 3,
               base_channels: int = 64, preactivated_shortcut: bool = False,
               final_bn: bool = False, parameterization: Parameterization = "standard",
               dtype=None, rngs: nnx.Rngs):
    self.depth = depth
    common = dict(parameterization=parameterization, dtype=dtype, rngs=rngs)
    self.stem = Conv(in_channels, base_channels, 3, padding=1, **common)
    self.blocks = nnx.List([
        PreActBlock(a, b, s, preactivated_shortcut=preactivated_shortcut, common=common,
                    rngs=rngs) for a, b, s in _stages(depth, base_channels)])
    self.bn = BatchNorm(8 * base_channels, dtype=dtype) if final_bn else None
    self.head = Dense(8 * base_channels, num_classes, gain=1 / 3, distribution="uniform",
                      **common)

  def __call__(self, x, train: bool = False):
    out = self.stem(x)
    for block in self.blocks:
      out = block(out, train)
    if self.bn is not None:
      out = jax.nn.relu(self.bn(out, use_running_average=not train))
    return self.head(jnp.mean(out, axis=(1, 2))).astype(jnp.float32)


class Normalized(nnx.Module):
  """`model((x − mean) / std)`: a model that expects normalized inputs, taking inputs in
  [0, 1] as the functional contract requires. mean and std (per channel) are constants, not
  trained parameters."""

  def __init__(self, model: nnx.Module, mean, std):
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    if mean.ndim != 1 or mean.shape != std.shape or not bool(jnp.all(std > 0)):
      raise ValueError(f"mean and std must be per-channel vectors of one length with std > 0, "
                       f"got mean {mean.tolist()} and std {std.tolist()}.")
    self.model = model
    self.mean = nnx.Variable(mean)
    self.std = nnx.Variable(std)

  def __call__(self, x, train: bool = False):
    return self.model((x - self.mean[...]) / self.std[...], train=train)
