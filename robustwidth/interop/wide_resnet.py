"""`robustwidth.models.WideResNet` <-> a PyTorch state_dict in the TRADES / RobustBench layout.

The PyTorch layout: conv1; block{1,2,3}.layer.{i}.{bn1, conv1, bn2, conv2, convShortcut}; bn1;
fc. Convolution weights are OIHW there and HWIO here; the linear weight is [out, in] there and
[in, out] here; BatchNorm's weight, bias, running_mean, running_var are our scale, bias, mean,
var. Both pad convolutions symmetrically and use BatchNorm epsilon 1e-5, so evaluation-mode
logits agree to float32 rounding. TRADES checkpoints also carry an unused `sub_block1`, and
DataParallel checkpoints a `module.` prefix: both are ignored.
"""
import re

import numpy as np
from flax import nnx

from robustwidth.models.wide_resnet import WideResNet

_IGNORED = re.compile(r"(^sub_block1\.|num_batches_tracked$)")
_BN = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var"))


def _torch():
  try:
    import torch
  except ImportError as error:
    raise ImportError("PyTorch weight interop needs the torch extra: "
                      "pip install -e .[torch]") from error
  return torch


def _layout(model: WideResNet):
  """(torch key, module, our attribute, kind) for every tensor of the PyTorch layout."""
  per_stage = (model.depth - 4) // 6
  entries = [("conv1.weight", model.stem, "kernel", "conv")]
  norms = [("bn1.", model.bn)]
  for b, block in enumerate(model.blocks):
    prefix = f"block{b // per_stage + 1}.layer.{b % per_stage}."
    norms += [(prefix + "bn1.", block.bn1), (prefix + "bn2.", block.bn2)]
    entries += [(prefix + "conv1.weight", block.conv1, "kernel", "conv"),
                (prefix + "conv2.weight", block.conv2, "kernel", "conv")]
    if block.shortcut is not None:
      entries.append((prefix + "convShortcut.weight", block.shortcut, "kernel", "conv"))
  for prefix, bn in norms:
    entries += [(prefix + theirs, bn, ours, "plain") for theirs, ours in _BN]
  entries += [("fc.weight", model.head, "kernel", "dense"),
              ("fc.bias", model.head, "bias", "plain")]
  return entries


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):
    value = value.detach().cpu().numpy()
  return np.asarray(value, np.float32)


def _clean(state_dict) -> dict:
  """Drops the `module.` prefix and the keys the model does not use."""
  out = {}
  for key, value in state_dict.items():
    key = key[len("module."):] if key.startswith("module.") else key
    if not _IGNORED.search(key):
      out[key] = value
  return out


def _scale(module, attribute: str) -> float:
  """Our stored kernel times the layer's multiplier is the PyTorch weight (NTK
  parameterization stores the unscaled kernel)."""
  return float(getattr(module, "multiplier", 1.0)) if attribute == "kernel" else 1.0


def load_torch_state_dict(model: WideResNet, state_dict) -> WideResNet:
  """Copies a PyTorch WideResNet state_dict into `model` (in place; also returned).

  Every key the model needs must be present with the matching shape, and no unused key may be
  left over (except `sub_block1.*` and `num_batches_tracked`): a mismatch is a ValueError
  naming the keys.
  """
  state = _clean(state_dict)
  entries = _layout(model)
  missing = [key for key, *_ in entries if key not in state]
  unused = sorted(set(state) - {key for key, *_ in entries})
  if missing or unused:
    raise ValueError(f"The state_dict does not match a WideResNet-{model.depth}-{model.width}: "
                     f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unused "
                     f"{unused[:5]}{'...' if len(unused) > 5 else ''}. Build the model with "
                     "from_torch_state_dict to infer its depth and widths.")
  for key, module, attribute, kind in entries:
    value = _to_numpy(state[key])
    if kind == "conv":
      value = value.transpose(2, 3, 1, 0)
    elif kind == "dense":
      value = value.T
    variable = getattr(module, attribute)
    if value.shape != variable[...].shape:
      raise ValueError(f"{key} has shape {value.shape} (after conversion) but the model "
                       f"expects {variable[...].shape}.")
    variable[...] = value / _scale(module, attribute)
  return model


def from_torch_state_dict(state_dict, *, parameterization: str = "standard") -> WideResNet:
  """Builds our WideResNet with the depth, width, channels and classes a PyTorch WideResNet
  state_dict implies, and loads it."""
  state = _clean(state_dict)
  for key in ("conv1.weight", "block1.layer.0.conv1.weight", "fc.weight"):
    if key not in state:
      raise ValueError(f"Not a WideResNet state_dict in the TRADES/RobustBench layout: no "
                       f"{key!r} (keys start {list(state)[:5]}).")
  base, in_channels = _to_numpy(state["conv1.weight"]).shape[:2]
  stage1 = _to_numpy(state["block1.layer.0.conv1.weight"]).shape[0]
  per_stage = len({k.split(".")[2] for k in state if k.startswith("block1.layer.")})
  if stage1 % base:
    raise ValueError(f"Stage-1 channels {stage1} are not a multiple of the stem's {base}.")
  model = WideResNet(6 * per_stage + 4, stage1 // base, _to_numpy(state["fc.weight"]).shape[0],
                     in_channels=in_channels, base_channels=base,
                     parameterization=parameterization, rngs=nnx.Rngs(params=0))
  return load_torch_state_dict(model, state)


def to_torch_state_dict(model: WideResNet) -> dict:
  """The model's parameters and BatchNorm statistics as a PyTorch state_dict (torch tensors,
  TRADES / RobustBench key names, `num_batches_tracked` included, no `sub_block1`)."""
  torch = _torch()
  state = {}
  for key, module, attribute, kind in _layout(model):
    value = np.asarray(getattr(module, attribute)[...], np.float32) * _scale(module, attribute)
    if kind == "conv":
      value = value.transpose(3, 2, 0, 1)
    elif kind == "dense":
      value = value.T
    state[key] = torch.from_numpy(np.ascontiguousarray(value))
    if key.endswith("running_var"):
      state[key[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
  return state


def load_torch_checkpoint(path: str, *, parameterization: str = "standard") -> WideResNet:
  """Our WideResNet from a PyTorch checkpoint file: a state_dict, or a dict holding one under
  "state_dict" (RobustBench's files) or "model_state_dict" (the paper authors' ckpt.pt and
  highest.pt, beside their optimizer state and epoch)."""
  torch = _torch()
  checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model_state_dict"):
    if key in checkpoint:
      checkpoint = checkpoint[key]
      break
  return from_torch_state_dict(checkpoint, parameterization=parameterization)


def torch_wide_resnet(depth: int, width: int, num_classes: int = 10, *, in_channels: int = 3,
                      base_channels: int = 16):
  """A PyTorch WideResNet with the TRADES state_dict layout (for running PyTorch code, such as
  the reference AutoAttack, on weights exported with `to_torch_state_dict`)."""
  _torch()
  from robustwidth.interop.torch_model import TorchWideResNet
  return TorchWideResNet(depth, width, num_classes, in_channels=in_channels,
                         base_channels=base_channels)
