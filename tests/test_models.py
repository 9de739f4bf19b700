"""Model families: parameter counts from closed forms, parameterizations, the functional
boundary."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from robustwidth import models
from tests import helpers


def _abstract_param_count(make):
  return models.count_params(nnx.state(nnx.eval_shape(make), nnx.Param))


@pytest.mark.parametrize("depth,width,expected", [
    (34, 10, 46_160_474),   # The TRADES reference WRN-34-10 (without its unused sub_block1).
    (28, 10, 36_479_194),   # WRN-28-10 as published.
    (16, 4, 2_748_890),     # WRN-16-4 as published.
])
def test_wide_resnet_parameter_counts(depth, width, expected):
  count = _abstract_param_count(
      lambda: models.WideResNet(depth, width, 10, rngs=nnx.Rngs(0)))
  assert count == expected


def _wrn_count_by_hand(depth, k, c=16, classes=10, inputs=3):
  n = (depth - 4) // 6
  ch = [c, c * k, 2 * c * k, 4 * c * k]
  total = 9 * inputs * ch[0]
  for stage in range(3):
    for i in range(n):
      a, b = (ch[stage] if i == 0 else ch[stage + 1]), ch[stage + 1]
      total += 2 * a + 9 * a * b + 2 * b + 9 * b * b + (a * b if a != b else 0)
  return total + 2 * ch[3] + ch[3] * classes + classes


@pytest.mark.parametrize("depth,k,c", [(10, 1, 1), (10, 3, 2), (16, 2, 4), (22, 1, 16)])
def test_wide_resnet_count_matches_the_architecture_by_hand(depth, k, c):
  count = _abstract_param_count(lambda: models.WideResNet(
      depth, k, 10, in_channels=1, base_channels=c, rngs=nnx.Rngs(0)))
  assert count == _wrn_count_by_hand(depth, k, c, inputs=1)


@pytest.mark.parametrize("width", [1, 3])
def test_mlp_and_cnn_counts(width):
  mlp = _abstract_param_count(lambda: models.create_model(
      "mlp", width=width, num_classes=10, input_shape=(8, 8, 1), seed=0, depth=2,
      base_channels=16))
  h = 16 * width
  assert mlp == 64 * h + h + h * h + h + h * 10 + 10
  cnn = _abstract_param_count(lambda: models.create_model(
      "cnn", width=width, num_classes=10, input_shape=(8, 8, 3), seed=0, base_channels=4))
  a, b, c = 4 * width, 8 * width, 16 * width
  assert cnn == 9 * 3 * a + a + 9 * a * b + b + 9 * b * c + c + c * 10 + 10


def _numpy_conv(x, kernel, stride):
  """3×3 convolution with zero padding 1, by loops over output positions."""
  n, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out_h, out_w = -(-h // stride), -(-w // stride)
  out = np.zeros((n, out_h, out_w, kernel.shape[-1]))
  for i in range(out_h):
    for j in range(out_w):
      patch = padded[:, i * stride:i * stride + 3, j * stride:j * stride + 3, :]
      out[:, i, j] = np.einsum("nhwc,hwcd->nd", patch, kernel)
  return out


def test_the_cnn_with_stride_two_and_a_flattened_head_matches_a_numpy_forward_pass():
  """28×28 → 14 → 7 → 4 with strides (2, 2, 2); the head reads all 4·4·4c features."""
  model = models.create_model("cnn", width=1, num_classes=10, input_shape=(28, 28, 1), seed=0,
                              base_channels=2, strides=(2, 2, 2), cnn_head="flatten")
  assert model.head.kernel[...].shape == (4 * 4 * 8, 10)
  x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
  out = x.astype(np.float64)
  for conv in model.convs:
    kernel = np.asarray(conv.kernel[...]) * float(conv.multiplier)
    out = np.maximum(_numpy_conv(out, kernel, 2) + np.asarray(conv.bias[...]), 0.0)
  head = model.head
  expected = (out.reshape(3, -1) @ (np.asarray(head.kernel[...]) * float(head.multiplier))
              + np.asarray(head.bias[...]))
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), expected, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="CNN head 'max': use one of"):
    models.create_model("cnn", width=1, num_classes=10, input_shape=(28, 28, 1), seed=0,
                        cnn_head="max")


@pytest.mark.parametrize("family", ["mlp", "cnn", "wide_resnet"])
def test_ntk_parameterization_computes_the_same_function_at_init(family):
  # Same seed → same unit-variance draws; standard stores w·sqrt(gain/fan), NTK stores w and
  # multiplies the output by sqrt(gain/fan). Same function, different parameters.
  make = lambda p: models.create_model(family, width=2, num_classes=10, input_shape=(8, 8, 1),
                                       seed=3, depth=10 if family == "wide_resnet" else 2,
                                       base_channels=4, parameterization=p)
  standard, ntk = make("standard"), make("ntk")
  x = helpers.images(0, 4)
  np.testing.assert_allclose(standard(x), ntk(x), rtol=1e-4, atol=1e-5)
  std_kernels = jax.tree.leaves(nnx.state(standard, nnx.Param))
  ntk_kernels = jax.tree.leaves(nnx.state(ntk, nnx.Param))
  ratio = [float(jnp.std(s) / jnp.std(n)) for s, n in zip(std_kernels, ntk_kernels)
           if s.ndim > 1]
  assert all(r < 0.9 for r in ratio)  # Standard kernels are scaled down; NTK ones are N(0, 1).


def test_wide_resnet_init_matches_the_reference():
  model = models.WideResNet(10, 2, 10, rngs=nnx.Rngs(0))
  conv = model.blocks[2].conv2.kernel[...]      # 3×3, 128 → 128
  assert float(jnp.std(conv)) == pytest.approx((2 / (9 * 128)) ** 0.5, rel=0.02)
  head = model.head.kernel[...]
  bound = 1 / np.sqrt(128)
  assert float(jnp.max(jnp.abs(head))) <= bound and float(jnp.std(head)) == pytest.approx(
      bound / np.sqrt(3), rel=0.05)
  assert float(jnp.abs(model.head.bias[...]).max()) == 0.0
  assert float(jnp.abs(model.bn.scale[...] - 1).max()) == 0.0


def test_functional_apply_is_pure_and_train_mode_updates_batch_statistics():
  graphdef, params, state = models.split(helpers.tiny_wrn())
  x = helpers.images(1, 8)
  before = jax.tree.map(np.asarray, state)
  logits_eval, same_state = models.apply(graphdef, params, state, x, train=False)
  logits_train, new_state = models.apply(graphdef, params, state, x, train=True)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, state))
  assert same_state is state
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before,
                         jax.tree.map(np.asarray, new_state))
  assert all(jax.tree.leaves(changed))
  assert not np.allclose(logits_eval, logits_train)  # Batch vs running statistics.


def test_resnet18_has_the_published_parameter_count():
  # RobustBench's ResNet18 / PreActResNet18 for CIFAR-10 (torchsummary's counts).
  resnet = models.create_model("resnet", width=1, num_classes=10, input_shape=(32, 32, 3),
                               seed=0, depth=18, base_channels=64)
  preact = models.create_model("preact_resnet", width=1, num_classes=10,
                               input_shape=(32, 32, 3), seed=0, depth=18, base_channels=64)
  assert models.count_params(models.split(resnet)[1]) == 11_173_962
  assert models.count_params(models.split(preact)[1]) == 11_171_146


def test_bad_model_arguments():
  with pytest.raises(ValueError, match="depth must be 6n"):
    models.WideResNet(12, 1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="width must be a positive integer"):
    models.create_model("mlp", width=0, num_classes=10, input_shape=(8, 8, 1), seed=0)
  with pytest.raises(ValueError, match="Unknown model family"):
    models.create_model("vit", width=1, num_classes=10, input_shape=(8, 8, 1), seed=0)
  with pytest.raises(ValueError, match="ResNet depth must be one of"):
    models.create_model("resnet", width=1, num_classes=10, input_shape=(8, 8, 1), seed=0,
                        depth=20)
  with pytest.raises(ValueError, match="Unknown parameterization"):
    models.create_model("mlp", width=1, num_classes=10, input_shape=(8, 8, 1), seed=0,
                        parameterization="mup")


# jaxlib 0.10's XLA:CPU corrupted memory on this program (a deep convolution stack ending in a
# global pool fused into one YNNPACK reduce fusion); run apart, so that a crash fails one test.
_WIDE_RESNET_FORWARD_TWICE = """
import jax
from robustwidth import config, experiment, models
c = config.base()
c.model.family, c.model.depth, c.model.width = "wide_resnet", 16, 4
graphdef, params, state = models.split(experiment.create_model(c, (32, 32, 3), 10))
f = models.logits_fn(graphdef, params, state)
x = jax.random.uniform(jax.random.PRNGKey(0), (8, 32, 32, 3))
print(jax.block_until_ready(jax.jit(lambda x: f(x) + f(x * 0.5))(x)).shape)
"""


def test_wide_resnet_16_4_forward_pass_runs_without_any_xla_flag():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-c", _WIDE_RESNET_FORWARD_TWICE],
                          env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "(8, 10)" in result.stdout
