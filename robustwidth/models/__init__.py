"""Model families: the TRADES WideResNet, ResNet/PreActResNet (to evaluate published weights)
and small MLP/CNN width families."""
from robustwidth.models.functional import (apply, count_params, logits_fn, model_logits_fn,
                                           split)
from robustwidth.models.layers import PARAMETERIZATIONS, Conv, Dense
from robustwidth.models.resnet import Normalized, PreActResNet, ResNet
from robustwidth.models.small import CNN, HEADS as CNN_HEADS, MLP
from robustwidth.models.wide_resnet import WideResNet
from robustwidth.models.factory import FAMILIES, create_model

__all__ = [
    "CNN", "CNN_HEADS", "Conv", "Dense", "FAMILIES", "MLP", "Normalized", "PARAMETERIZATIONS",
    "PreActResNet", "ResNet", "WideResNet",
    "apply", "count_params", "create_model", "logits_fn", "model_logits_fn", "split",
]
