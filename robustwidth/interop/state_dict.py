"""Our models <-> PyTorch state_dicts in the layouts of the TRADES and RobustBench code: the
WideResNet, ResNet-18/34 and PreActResNet-18/34, optionally behind input mean/std
normalization.

Layouts (PyTorch keys):
  wide_resnet     conv1; block{1,2,3}.layer.{i}.{bn1, conv1, bn2, conv2, convShortcut}; bn1; fc
  resnet18/34     conv1; bn1; layer{1..4}.{i}.{conv1, bn1, conv2, bn2, shortcut.0 (conv),
                  shortcut.1 (BN)}; linear
  preact_resnet   conv1; layer{1..4}.{i}.{bn1, conv1, bn2, conv2, shortcut.0}; bn (when the
  18/34           model has a final BN, RobustBench's bn_before_fc); linear
Convolution weights are OIHW there and HWIO here; linear weights [out, in] there and [in, out]
here; BatchNorm's weight, bias, running_mean, running_var are our scale, bias, mean, var. Both
pad convolutions symmetrically and use BatchNorm epsilon 1e-5, so evaluation-mode logits agree
to float32 rounding. TRADES checkpoints also carry an unused `sub_block1`, and DataParallel
checkpoints a `module.` prefix: both are ignored.

Input normalization is not part of these state_dicts (RobustBench keeps mean and std as
constants of the model's code): pass them as `mean` and `std`.

Files are read with `torch.load(..., weights_only=True)`, which unpickles tensors and plain
containers only and never runs code from the file.
"""
import re

import numpy as np
from flax import nnx

from robustwidth.models.resnet import STAGE_BLOCKS, Normalized, PreActResNet, ResNet
from robustwidth.models.wide_resnet import WideResNet

ARCHITECTURES = ("wide_resnet", "resnet18", "resnet34", "preact_resnet18", "preact_resnet34")
_IGNORED = re.compile(r"(^sub_block1\.|num_batches_tracked$)")
_BN = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var"))


def _torch():
  try:
    import torch
  except ImportError as error:
    raise ImportError("PyTorch weight interop needs the torch extra: "
                      "pip install -e .[torch]") from error
  return torch


def _norm(prefix: str, bn) -> list:
  return [(prefix + theirs, bn, ours, "plain") for theirs, ours in _BN]


def _conv(key: str, conv) -> tuple:
  return (key, conv, "kernel", "conv")


def _head(prefix: str, dense) -> list:
  return [(prefix + "weight", dense, "kernel", "dense"), (prefix + "bias", dense, "bias", "plain")]


def _wide_resnet_layout(model: WideResNet) -> list:
  per_stage = (model.depth - 4) // 6
  entries = [_conv("conv1.weight", model.stem)] + _norm("bn1.", model.bn)
  for b, block in enumerate(model.blocks):
    prefix = f"block{b // per_stage + 1}.layer.{b % per_stage}."
    entries += _norm(prefix + "bn1.", block.bn1) + _norm(prefix + "bn2.", block.bn2)
    entries += [_conv(prefix + "conv1.weight", block.conv1),
                _conv(prefix + "conv2.weight", block.conv2)]
    if block.shortcut is not None:
      entries.append(_conv(prefix + "convShortcut.weight", block.shortcut))
  return entries + _head("fc.", model.head)


def _block_prefixes(depth: int):
  return [f"layer{stage + 1}.{i}." for stage, count in enumerate(STAGE_BLOCKS[depth])
          for i in range(count)]


def _resnet_layout(model: ResNet) -> list:
  entries = [_conv("conv1.weight", model.stem)] + _norm("bn1.", model.stem_bn)
  for prefix, block in zip(_block_prefixes(model.depth), model.blocks):
    entries += [_conv(prefix + "conv1.weight", block.conv1), _conv(prefix + "conv2.weight",
                                                                   block.conv2)]
    entries += _norm(prefix + "bn1.", block.bn1) + _norm(prefix + "bn2.", block.bn2)
    if block.shortcut is not None:
      entries += [_conv(prefix + "shortcut.0.weight", block.shortcut)]
      entries += _norm(prefix + "shortcut.1.", block.shortcut_bn)
  return entries + _head("linear.", model.head)


def _preact_resnet_layout(model: PreActResNet) -> list:
  entries = [_conv("conv1.weight", model.stem)]
  for prefix, block in zip(_block_prefixes(model.depth), model.blocks):
    entries += [_conv(prefix + "conv1.weight", block.conv1), _conv(prefix + "conv2.weight",
                                                                   block.conv2)]
    entries += _norm(prefix + "bn1.", block.bn1) + _norm(prefix + "bn2.", block.bn2)
    if block.shortcut is not None:
      entries.append(_conv(prefix + "shortcut.0.weight", block.shortcut))
  if model.bn is not None:
    entries += _norm("bn.", model.bn)
  return entries + _head("linear.", model.head)


def _layout(model) -> list:
  """(torch key, module, our attribute, kind) for every tensor of the PyTorch layout."""
  if isinstance(model, Normalized):
    return _layout(model.model)
  for kind, layout in ((WideResNet, _wide_resnet_layout), (ResNet, _resnet_layout),
                       (PreActResNet, _preact_resnet_layout)):
    if isinstance(model, kind):
      return layout(model)
  raise TypeError(f"No PyTorch layout for {type(model).__name__}; the supported architectures "
                  f"are {ARCHITECTURES}.")


def model_name(model) -> str:
  """"WideResNet-34-10", "ResNet-18", "PreActResNet-18"."""
  inner = model.model if isinstance(model, Normalized) else model
  if isinstance(inner, WideResNet):
    return f"WideResNet-{inner.depth}-{inner.width}"
  return f"{type(inner).__name__}-{inner.depth}"


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


def load_torch_state_dict(model, state_dict):
  """Copies a PyTorch state_dict of the model's architecture into `model` (in place; also
  returned).

  Every key the model needs must be present with the matching shape, and no unused key may be
  left over (except `sub_block1.*` and `num_batches_tracked`): a mismatch is a ValueError
  naming the keys.
  """
  state = _clean(state_dict)
  entries = _layout(model)
  missing = [key for key, *_ in entries if key not in state]
  unused = sorted(set(state) - {key for key, *_ in entries})
  if missing or unused:
    raise ValueError(f"The state_dict does not match a {model_name(model)}: missing "
                     f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unused "
                     f"{unused[:5]}{'...' if len(unused) > 5 else ''}. Build the model with "
                     "from_torch_state_dict to infer its sizes, with the right arch.")
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


def _require(state: dict, keys, arch: str) -> None:
  for key in keys:
    if key not in state:
      raise ValueError(f"Not a {arch} state_dict in the TRADES/RobustBench layout: no {key!r} "
                       f"(keys start {list(state)[:5]}). The architectures are "
                       f"{ARCHITECTURES}.")


def _build(state: dict, arch: str, parameterization: str, preactivated_shortcut: bool):
  """Our model of `arch` with the sizes the state_dict implies (not loaded)."""
  rngs = nnx.Rngs(params=0)
  if arch == "wide_resnet":
    _require(state, ("conv1.weight", "block1.layer.0.conv1.weight", "fc.weight"), arch)
    base, in_channels = _to_numpy(state["conv1.weight"]).shape[:2]
    stage1 = _to_numpy(state["block1.layer.0.conv1.weight"]).shape[0]
    per_stage = len({k.split(".")[2] for k in state if k.startswith("block1.layer.")})
    if stage1 % base:
      raise ValueError(f"Stage-1 channels {stage1} are not a multiple of the stem's {base}.")
    return WideResNet(6 * per_stage + 4, stage1 // base, _to_numpy(state["fc.weight"]).shape[0],
                      in_channels=in_channels, base_channels=base,
                      parameterization=parameterization, rngs=rngs)
  _require(state, ("conv1.weight", "linear.weight"), arch)
  base, in_channels = _to_numpy(state["conv1.weight"]).shape[:2]
  common = dict(in_channels=in_channels, base_channels=base, parameterization=parameterization,
                rngs=rngs)
  depth, num_classes = int(arch[-2:]), _to_numpy(state["linear.weight"]).shape[0]
  if arch.startswith("resnet"):
    return ResNet(depth, num_classes, **common)
  return PreActResNet(depth, num_classes, final_bn="bn.weight" in state,
                      preactivated_shortcut=preactivated_shortcut, **common)


def from_torch_state_dict(state_dict, *, arch: str = "wide_resnet", mean=None, std=None,
                          preactivated_shortcut: bool = False,
                          parameterization: str = "standard"):
  """Builds our model of `arch` (one of `ARCHITECTURES`) with the depth, widths, channels and
  classes the PyTorch state_dict implies, and loads it.

  mean, std: per-channel input normalization the PyTorch model applies to its [0, 1] inputs
  (the model is then wrapped in `models.Normalized`). preactivated_shortcut: for a
  PreActResNet, whether projection shortcuts read the pre-activated input (RobustBench's
  PreActBlockV2) rather than the raw one (its PreActBlock).
  """
  if arch not in ARCHITECTURES:
    raise ValueError(f"Unknown architecture {arch!r}; use one of {ARCHITECTURES}.")
  if (mean is None) != (std is None):
    raise ValueError("Input normalization needs both mean and std (or neither).")
  state = _clean(state_dict)
  model = load_torch_state_dict(_build(state, arch, parameterization, preactivated_shortcut),
                                state)
  return model if mean is None else Normalized(model, mean, std)


def to_torch_state_dict(model) -> dict:
  """The model's parameters and BatchNorm statistics as a PyTorch state_dict (torch tensors,
  the TRADES / RobustBench key names, `num_batches_tracked` included, no `sub_block1`)."""
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


def read_torch_file(path: str) -> dict:
  """The state_dict in a PyTorch checkpoint file: the file itself, or the dict under
  "state_dict" or "model_state_dict" (RobustBench's and the authors' files). Read with
  `torch.load(..., weights_only=True)`: no code from the file runs."""
  torch = _torch()
  checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model_state_dict"):
    if isinstance(checkpoint, dict) and key in checkpoint:
      return checkpoint[key]
  return checkpoint


def load_torch_checkpoint(path: str, *, arch: str = "wide_resnet", mean=None, std=None,
                          preactivated_shortcut: bool = False,
                          parameterization: str = "standard"):
  """Our model from a PyTorch checkpoint file (`read_torch_file`), as `from_torch_state_dict`
  builds it."""
  return from_torch_state_dict(read_torch_file(path), arch=arch, mean=mean, std=std,
                               preactivated_shortcut=preactivated_shortcut,
                               parameterization=parameterization)


def torch_model(arch: str, num_classes: int = 10, *, depth: int = 34, width: int = 10,
                in_channels: int = 3, base_channels: int | None = None,
                preactivated_shortcut: bool = False, final_bn: bool = False):
  """A PyTorch model of `arch` with the matching state_dict layout (for running PyTorch code,
  such as the reference AutoAttack, on weights exported with `to_torch_state_dict`).

  depth and width apply to the WideResNet; base_channels defaults to 16 (WideResNet) or 64.
  """
  _torch()
  from robustwidth.interop import torch_definitions as definitions
  if arch == "wide_resnet":
    return definitions.TorchWideResNet(depth, width, num_classes, in_channels=in_channels,
                                       base_channels=base_channels or 16)
  if arch not in ARCHITECTURES:
    raise ValueError(f"Unknown architecture {arch!r}; use one of {ARCHITECTURES}.")
  common = dict(in_channels=in_channels, base_channels=base_channels or 64)
  if arch.startswith("resnet"):
    return definitions.TorchResNet(STAGE_BLOCKS[int(arch[-2:])], num_classes, **common)
  return definitions.TorchPreActResNet(STAGE_BLOCKS[int(arch[-2:])], num_classes,
                                       preactivated_shortcut=preactivated_shortcut,
                                       final_bn=final_bn, **common)

