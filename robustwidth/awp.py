"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020), as pure functions.

Before each update the weights take one normalized ascent step on the training loss,
    v_l = γ · ‖w_l‖ · g_l / ‖g_l‖,   g = ∇_w L(w),
separately for each weight tensor w_l (Frobenius norms), so that ‖v_l‖ = γ‖w_l‖. As in the
reference, only convolution kernels and dense matrices are perturbed (the parameters with two
or more dimensions); BatchNorm scales and offsets and biases are not. The update's gradient is
then taken at w + v and applied to w, which is the reference's "perturb, step, restore".
L is the method's own training loss (TRADES for TRADES-AWP, cross-entropy on x̂ for AT-AWP);
its BatchNorm statistics from the ascent pass are discarded, as the reference's proxy model's.
"""
import jax
import jax.numpy as jnp
import optax


def is_perturbed(weight: jax.Array) -> bool:
  """Whether AWP perturbs this parameter: kernels and matrices, not BatchNorm or biases."""
  return weight.ndim >= 2


def relative_perturbation(grads, params, gamma):
  """v with v_l = γ · ‖w_l‖ · g_l / ‖g_l‖ on each perturbed tensor and 0 elsewhere."""

  def one(g, w):
    if not is_perturbed(w):
      return jnp.zeros_like(w)
    return gamma * jnp.linalg.norm(w) * g / (jnp.linalg.norm(g) + 1e-20)

  return jax.tree.map(one, grads, params)


def perturbation(loss_fn, params, gamma):
  """AWP's v at `params` for `loss_fn: params -> scalar loss` (one ascent step)."""
  return relative_perturbation(jax.grad(loss_fn)(params), params, gamma)


def perturbed_params(loss_fn, params, gamma):
  """w + v, where the gradient of the update is taken; `params` when γ = 0 (the ascent pass
  is then skipped, which makes a warm-up without AWP cost nothing)."""
  return jax.lax.cond(
      gamma > 0,
      lambda: optax.apply_updates(params, perturbation(loss_fn, params, gamma)),
      lambda: params)
