"""Weights to and from PyTorch (the `torch` extra): the WideResNet state_dict layout of the
TRADES and RobustBench code, so published checkpoints can be evaluated with our attacks and
our models with theirs."""
from robustwidth.interop.wide_resnet import (from_torch_state_dict, load_torch_checkpoint,
                                             load_torch_state_dict, to_torch_state_dict,
                                             torch_wide_resnet)

__all__ = ["from_torch_state_dict", "load_torch_checkpoint", "load_torch_state_dict",
           "to_torch_state_dict", "torch_wide_resnet"]
