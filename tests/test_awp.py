"""Adversarial weight perturbation against closed forms on a linear model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustwidth import awp, models
from tests import helpers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 4)).astype(np.float32)
T = RNG.normal(size=(6, 3)).astype(np.float32)
PARAMS = {"kernel": RNG.normal(size=(4, 3)).astype(np.float32),
          "bias": RNG.normal(size=(3,)).astype(np.float32)}


def _squared_loss(params):
  """½‖XW + b − T‖²: ∇_W = Xᵀ(XW + b − T), ∇_b = Σ_rows (XW + b − T)."""
  return 0.5 * jnp.sum((X @ params["kernel"] + params["bias"] - T) ** 2)


def _closed_form_kernel_gradient(kernel, bias):
  return X.T @ (X @ kernel + bias - T)


def test_perturbation_is_the_normalized_gradient_scaled_to_gamma_times_the_weight_norm():
  gamma = 5e-3
  v = awp.perturbation(_squared_loss, PARAMS, gamma)
  g = _closed_form_kernel_gradient(PARAMS["kernel"], PARAMS["bias"])
  expected = gamma * np.linalg.norm(PARAMS["kernel"]) * g / np.linalg.norm(g)
  np.testing.assert_allclose(v["kernel"], expected, rtol=1e-5, atol=1e-8)
  assert np.linalg.norm(v["kernel"]) == pytest.approx(
      gamma * np.linalg.norm(PARAMS["kernel"]), rel=1e-5)
  np.testing.assert_array_equal(v["bias"], np.zeros(3))  # Biases are not perturbed.


def test_the_gradient_is_taken_at_the_perturbed_weights():
  gamma = 0.1
  at = jax.jit(awp.perturbed_params, static_argnums=0)(_squared_loss, PARAMS, gamma)
  g = _closed_form_kernel_gradient(PARAMS["kernel"], PARAMS["bias"])
  kernel = PARAMS["kernel"] + gamma * np.linalg.norm(PARAMS["kernel"]) * g / np.linalg.norm(g)
  np.testing.assert_allclose(at["kernel"], kernel, rtol=1e-5)
  np.testing.assert_array_equal(at["bias"], PARAMS["bias"])
  grad = jax.grad(_squared_loss)(at)["kernel"]
  np.testing.assert_allclose(grad, _closed_form_kernel_gradient(kernel, PARAMS["bias"]),
                             rtol=1e-4)
  # One ascent step of relative size γ raises the loss.
  assert float(_squared_loss(at)) > float(_squared_loss(PARAMS))


def test_gamma_zero_leaves_the_weights_exactly():
  at = jax.jit(awp.perturbed_params, static_argnums=0)(_squared_loss, PARAMS, jnp.float32(0))
  for name in PARAMS:
    np.testing.assert_array_equal(at[name], PARAMS[name])


def test_a_network_is_perturbed_per_weight_tensor_and_not_in_batch_norm_or_biases():
  graphdef, params, state = models.split(helpers.tiny_wrn())
  x, y = helpers.images(0, 8), helpers.labels(0, 8)

  def loss(p):
    logits, _ = models.apply(graphdef, p, state, x, train=True)
    return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(8), y])

  gamma = 1e-2
  v = jax.jit(awp.perturbation, static_argnums=0)(loss, params, gamma)
  flat_v = dict(jax.tree_util.tree_flatten_with_path(v)[0])
  flat_w = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  perturbed = {jax.tree_util.keystr(path) for path, leaf in flat_v.items()
               if np.any(np.asarray(leaf) != 0)}
  expected = {jax.tree_util.keystr(path) for path, leaf in flat_w.items()
              if path[-2].key == "kernel"}  # Convolution kernels and the head's matrix.
  assert perturbed == expected and len(expected) == 10
  for path in flat_w:
    if jax.tree_util.keystr(path) in expected:
      assert np.linalg.norm(flat_v[path]) == pytest.approx(
          gamma * np.linalg.norm(flat_w[path]), rel=1e-4)
