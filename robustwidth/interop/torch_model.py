"""A PyTorch WideResNet (TRADES variant) whose state_dict has the TRADES / RobustBench layout:
the counterpart of `robustwidth.models.WideResNet`. Imported only through
`wide_resnet.torch_wide_resnet`, since it needs torch."""
import torch
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
