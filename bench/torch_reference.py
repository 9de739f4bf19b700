"""The PyTorch baseline the benchmarks compare against: the TRADES train step and PGD
evaluation, written as efficiently as eager PyTorch allows, run on `robustwidth.interop`'s
PyTorch WideResNet holding the same weights.

The same algorithm as `robustwidth.steps`: the inner KL attack in evaluation mode against the
clean logits computed once (the reference code recomputes them at every inner step and runs the
clean training-mode pass twice; this baseline does neither, so it is the stronger one), then
CE(f(x), y) + β·KL in training mode, each pass updating the BatchNorm statistics once, and SGD
with momentum and coupled weight decay. Used only by bench/.
"""
import contextlib

import torch
import torch.nn.functional as F


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
  naturally and robustly correct examples, both predicted in one forward pass."""
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
    natural, adversarial = model(torch.cat([x, x_adv])).split(len(x))
  return (natural.argmax(1) == y).sum(), (adversarial.argmax(1) == y).sum()


def sgd(model, lr=0.1, momentum=0.9, weight_decay=2e-4):
  return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                         weight_decay=weight_decay)
