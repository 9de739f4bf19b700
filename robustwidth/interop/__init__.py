"""Weights to and from PyTorch (the `torch` extra): the state_dict layouts of the TRADES and
RobustBench code (WideResNet, ResNet-18/34, PreActResNet-18/34), so published checkpoints can
be evaluated with our attacks and our models with theirs. PyTorch files are read with
`torch.load(..., weights_only=True)`: no code in a checkpoint runs."""
from robustwidth.interop.state_dict import (ARCHITECTURES, from_torch_state_dict,
                                            load_torch_checkpoint, load_torch_state_dict,
                                            model_name, read_torch_file, to_torch_state_dict,
                                            torch_model)

__all__ = ["ARCHITECTURES", "from_torch_state_dict", "load_torch_checkpoint",
           "load_torch_state_dict", "model_name", "read_torch_file", "to_torch_state_dict",
           "torch_model"]
