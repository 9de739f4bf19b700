"""Small models and data shared by the tests."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from robustwidth import interop, models


def linear_logits_fn(weights: np.ndarray, bias: np.ndarray):
  """x -> x_flat @ W + b: a linear classifier whose worst cases have closed forms."""
  w, b = jnp.asarray(weights), jnp.asarray(bias)
  return lambda x: x.reshape(x.shape[0], -1) @ w + b


def tiny_wrn(width: int = 1, seed: int = 0, num_classes: int = 10) -> nnx.Module:
  """WRN-10 on 8×8×1 inputs with c = 2: seconds to compile, BatchNorm included."""
  return models.create_model("wide_resnet", width=width, num_classes=num_classes,
                             input_shape=(8, 8, 1), seed=seed, depth=10, base_channels=2)


def images(seed: int, batch: int, shape=(8, 8, 1)) -> jnp.ndarray:
  """Random images in [0, 1] that include exact 0s and 1s (the box's faces)."""
  x = jax.random.uniform(jax.random.key(seed), (batch, *shape))
  return jnp.clip(1.2 * x - 0.1, 0.0, 1.0)


def labels(seed: int, batch: int, num_classes: int = 10) -> jnp.ndarray:
  return jax.random.randint(jax.random.key(seed + 1000), (batch,), 0, num_classes)


def with_trained_batch_norm(model: nnx.Module, x: jnp.ndarray) -> nnx.Module:
  """Moves the BatchNorm running statistics away from their initial (0, 1) values."""
  graphdef, params, state = models.split(model)
  for _ in range(3):
    _, state = models.apply(graphdef, params, state, x, train=True)
  return nnx.merge(graphdef, params, state)


def tiny_mlp(seed: int = 0) -> nnx.Module:
  """A BatchNorm-free MLP on 8×8×1 inputs: compiles in well under a second."""
  return models.create_model("mlp", width=1, num_classes=10, input_shape=(8, 8, 1), seed=seed,
                             depth=1, base_channels=16)


def torch_wide_resnet(depth=10, width=2, base=3, in_channels=1, seed=0):
  """The TRADES-layout PyTorch WRN (`interop.torch_wide_resnet`, needs torch) with random
  weights, BatchNorm affine parameters and running statistics away from their defaults, and
  head biases; in evaluation mode."""
  import torch
  torch.manual_seed(seed)
  net = interop.torch_wide_resnet(depth, width, 10, in_channels=in_channels,
                                  base_channels=base)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
      elif isinstance(module, torch.nn.Linear):
        module.bias.uniform_(-0.5, 0.5)
  return net.eval()
