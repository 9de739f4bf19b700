"""PyTorch definitions whose state_dicts have the TRADES / RobustBench layouts: the WideResNet
(TRADES variant), ResNet and PreActResNet, counterparts of `robustwidth.models`' WideResNet,
ResNet and PreActResNet. Imported only through `state_dict.torch_model`, since it needs torch.
"""
import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
  """Pre-activation basic block; a projection shortcut reads the pre-activated input."""

  def __init__(self, in_channels: int, out_channels: int, stride: int):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_channels)
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_channels)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
    self.convShortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
                         if in_channels != out_channels else None)

  def forward(self, x):
    pre = torch.relu(self.bn1(x))
    out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
    return out + (x if self.convShortcut is None else self.convShortcut(pre))


class _Stage(nn.Module):
  def __init__(self, blocks: int, in_channels: int, out_channels: int, stride: int):
    super().__init__()
    self.layer = nn.Sequential(*[
        _Block(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
        for i in range(blocks)])

  def forward(self, x):
    return self.layer(x)


class TorchWideResNet(nn.Module):
  """WRN-depth-width on NCHW inputs in [0, 1]; global average pooling before the head (the
  reference's 8×8 pool on 32×32 inputs)."""

  def __init__(self, depth: int, width: int, num_classes: int = 10, *, in_channels: int = 3,
               base_channels: int = 16):
    super().__init__()
    if depth < 10 or (depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}.")
    blocks = (depth - 4) // 6
    c = [base_channels, base_channels * width, 2 * base_channels * width,
         4 * base_channels * width]
    self.conv1 = nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)
    self.block1 = _Stage(blocks, c[0], c[1], 1)
    self.block2 = _Stage(blocks, c[1], c[2], 2)
    self.block3 = _Stage(blocks, c[2], c[3], 2)
    self.bn1 = nn.BatchNorm2d(c[3])
    self.fc = nn.Linear(c[3], num_classes)

  def forward(self, x):
    out = self.block3(self.block2(self.block1(self.conv1(x))))
    out = torch.relu(self.bn1(out))
    return self.fc(out.mean(dim=(2, 3)))


class _ResNetBlock(nn.Module):
  """RobustBench's BasicBlock: conv-BN-ReLU-conv-BN + shortcut (conv-BN when projecting), ReLU."""

  def __init__(self, in_channels: int, out_channels: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(out_channels)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_channels)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_channels != out_channels:
      self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                    nn.BatchNorm2d(out_channels))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + self.shortcut(x))


class _PreActBlock(nn.Module):
  """RobustBench's PreActBlock (shortcut of the raw input) or PreActBlockV2 (of the
  pre-activated one)."""

  def __init__(self, in_channels: int, out_channels: int, stride: int,
               preactivated_shortcut: bool):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_channels)
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_channels)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
    if stride != 1 or in_channels != out_channels:
      self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))
    self.preactivated_shortcut = preactivated_shortcut

  def forward(self, x):
    out = F.relu(self.bn1(x))
    if hasattr(self, "shortcut"):
      shortcut = self.shortcut(out if self.preactivated_shortcut else x)
    else:
      shortcut = x
    out = self.conv2(F.relu(self.bn2(self.conv1(out))))
    return out + shortcut


def _stages(make_block, stage_blocks, base_channels: int) -> list:
  stages, channels = [], base_channels
  for stage, count in enumerate(stage_blocks):
    out = base_channels * 2 ** stage
    blocks = []
    for i in range(count):
      blocks.append(make_block(channels, out, (1 if stage == 0 else 2) if i == 0 else 1))
      channels = out
    stages.append(nn.Sequential(*blocks))
  return stages


class TorchResNet(nn.Module):
  """RobustBench's ResNet of basic blocks on NCHW inputs in [0, 1] (32×32: the 4×4 average
  pool covers the last feature map)."""

  def __init__(self, stage_blocks, num_classes: int = 10, *, in_channels: int = 3,
               base_channels: int = 64):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, base_channels, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(base_channels)
    self.layer1, self.layer2, self.layer3, self.layer4 = _stages(_ResNetBlock, stage_blocks,
                                                                 base_channels)
    self.linear = nn.Linear(8 * base_channels, num_classes)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return self.linear(F.avg_pool2d(out, 4).flatten(1))


class TorchPreActResNet(nn.Module):
  """RobustBench's PreActResNet on NCHW inputs in [0, 1]; `final_bn` is its bn_before_fc."""

  def __init__(self, stage_blocks, num_classes: int = 10, *, in_channels: int = 3,
               base_channels: int = 64, preactivated_shortcut: bool = False,
               final_bn: bool = False):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, base_channels, 3, 1, 1, bias=False)
    block = lambda a, b, s: _PreActBlock(a, b, s, preactivated_shortcut)
    self.layer1, self.layer2, self.layer3, self.layer4 = _stages(block, stage_blocks,
                                                                 base_channels)
    if final_bn:
      self.bn = nn.BatchNorm2d(8 * base_channels)
    self.linear = nn.Linear(8 * base_channels, num_classes)

  def forward(self, x):
    out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
    if hasattr(self, "bn"):
      out = F.relu(self.bn(out))
    return self.linear(F.avg_pool2d(out, 4).flatten(1))
