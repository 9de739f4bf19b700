"""The PyTorch baseline the benchmarks compare against: the TRADES WideResNet and the TRADES
train step and PGD evaluation, written as efficiently as eager PyTorch allows.

Same architecture and init as `robustwidth.models.WideResNet` (PAPER.md §5), and the same
algorithm as `robustwidth.steps`: the inner KL attack in evaluation mode against the clean
logits computed once (the reference code recomputes them at every inner step and runs the clean
training-mode pass twice; this baseline does neither, so it is the stronger one), then
CE(f(x), y) + β·KL in training mode, each pass updating the BatchNorm statistics once, and SGD
with momentum and coupled weight decay. Used only by bench/.
"""
import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  """Pre-activation block; a projection shortcut reads the pre-activated input."""

  def __init__(self, in_channels: int, out_channels: int, stride: int):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_channels)
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_channels)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
    self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
                     if in_channels != out_channels else None)

  def forward(self, x):
    pre = F.relu(self.bn1(x))
    out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
    return (x if self.shortcut is None else self.shortcut(pre)) + out


class WideResNet(nn.Module):
  """WRN-`depth`-`width`, the TRADES variant, on NCHW inputs in [0, 1]."""

  def __init__(self, depth: int, width: int, num_classes: int = 10, in_channels: int = 3,
               base_channels: int = 16):
    super().__init__()
    c = [base_channels, base_channels * width, 2 * base_channels * width,
         4 * base_channels * width]
    n = (depth - 4) // 6
    self.stem = nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)
    self.blocks = nn.Sequential(*[
        BasicBlock(c[stage] if i == 0 else c[stage + 1], c[stage + 1],
                   stride if i == 0 else 1)
        for stage, stride in enumerate((1, 2, 2)) for i in range(n)])
    self.bn = nn.BatchNorm2d(c[3])
    self.head = nn.Linear(c[3], num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
      elif isinstance(m, nn.Linear):
        m.bias.data.zero_()

  def forward(self, x):
    out = F.relu(self.bn(self.blocks(self.stem(x))))
    return self.head(out.mean((2, 3)))


def load_robustwidth(model: WideResNet, params, model_state) -> WideResNet:
  """Copies a robustwidth WideResNet's parameters and BatchNorm statistics into `model`."""
  names = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}
  with torch.no_grad():
    for source in (params, model_state):
      for path, variable in source.flat_state():
        *module, leaf = (str(p) for p in path)
        target = ".".join(module + [names[leaf]])
        tensor = (model.get_parameter(target) if leaf in ("kernel", "scale", "bias")
                  else model.get_buffer(target))
        value = np.asarray(variable.get_value())
        if value.ndim == 4:
          value = value.transpose(3, 2, 0, 1)   # HWIO -> OIHW
        elif value.ndim == 2:
          value = value.T                      # [in, out] -> [out, in]
        tensor.copy_(torch.from_numpy(np.array(value)))
  return model


def trades_kl_sum(logits_nat, logits_adv):
  """Σ over the batch of KL(softmax nat ‖ softmax adv), the reference's `KLDivLoss(sum)`."""
  log_p = F.log_softmax(logits_nat, dim=1)
  return torch.sum(log_p.exp() * (log_p - F.log_softmax(logits_adv, dim=1)))


def _autocast(x, dtype):
  if dtype == torch.float32:
    return contextlib.nullcontext()
  return torch.autocast(x.device.type, dtype=dtype)


def kl_attack(model, x, *, eps, step_size, num_steps, dtype=torch.float32):
  """The TRADES inner maximization in evaluation mode, from x + 0.001·N(0, 1)."""
  model.eval()
  with torch.no_grad(), _autocast(x, dtype):
    logits_nat = model(x).float()
  x_adv = torch.clamp(x + 0.001 * torch.randn_like(x), 0.0, 1.0)
  for _ in range(num_steps):
    x_adv.requires_grad_(True)
    with _autocast(x, dtype):
      loss = trades_kl_sum(logits_nat, model(x_adv).float())
    grad, = torch.autograd.grad(loss, x_adv)
    x_adv = x_adv.detach() + step_size * grad.sign()
    x_adv = torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)
  return x_adv


def trades_step(model, optimizer, x, y, *, beta=6.0, eps=0.031, step_size=0.007, num_steps=10,
                dtype=torch.float32):
  """One TRADES step; returns the loss (a tensor, so the caller decides when to sync)."""
  x_adv = kl_attack(model, x, eps=eps, step_size=step_size, num_steps=num_steps, dtype=dtype)
  model.train()
  optimizer.zero_grad(set_to_none=True)
  with _autocast(x, dtype):
    logits_nat = model(x).float()
    logits_adv = model(x_adv).float()
  loss = F.cross_entropy(logits_nat, y) + beta * trades_kl_sum(logits_nat, logits_adv) / len(x)
  loss.backward()
  optimizer.step()
  return loss.detach()


def pgd_eval(model, x, y, *, eps=0.031, step_size=0.003, num_steps=20, dtype=torch.float32):
  """PGD-`num_steps` (cross-entropy, uniform start) in evaluation mode; returns the counts of
  naturally and robustly correct examples."""
  model.eval()
  x_adv = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), 0.0, 1.0)
  for _ in range(num_steps):
    x_adv.requires_grad_(True)
    with _autocast(x, dtype):
      loss = F.cross_entropy(model(x_adv).float(), y, reduction="sum")
    grad, = torch.autograd.grad(loss, x_adv)
    x_adv = x_adv.detach() + step_size * grad.sign()
    x_adv = torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)
  with torch.no_grad(), _autocast(x, dtype):
    natural = (model(x).argmax(1) == y).sum()
    robust = (model(x_adv).argmax(1) == y).sum()
  return natural, robust


def sgd(model, lr=0.1, momentum=0.9, weight_decay=2e-4):
  return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                         weight_decay=weight_decay)
