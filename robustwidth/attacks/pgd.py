"""Projected gradient descent (Madry et al.) on ℓ∞, ℓ2 and ℓ1 balls.

Composed from the small pieces in `geometry` (start, ascent direction, projection) and
`objectives` (per-example losses). The model is only ever called through the evaluation-mode
`logits_fn`, so an attack cannot change model state. Pass the model as a
`jax.tree_util.Partial` to jit the attack once for all weights of its shapes:

  logits_fn = models.logits_fn(graphdef, params, model_state)   # weights as pytree leaves
  attack = jax.jit(lambda f, x, y, key: attacks.pgd(f, x, y, key=key, eps=8 / 255,
                                                    step_size=2 / 255, num_steps=10))
  x_adv = attack(logits_fn, x, y, jax.random.key(0))
"""
from typing import Callable

import jax
import jax.numpy as jnp

from robustwidth import validation
from robustwidth.attacks import geometry, objectives
from robustwidth.attacks.components import LogitsFn


def _check_args(logits_fn, x, y, eps, step_size, num_steps, norm, loss, init, restarts):
  validation.check_choice("norm", norm, geometry.NORMS)
  validation.check_choice("attack loss", loss, objectives.LOSSES)
  validation.check_choice("init", init, geometry.INITS)
  validation.check_nonnegative("eps", eps)
  validation.check_nonnegative("step_size", step_size)
  validation.check_positive_int("num_steps", num_steps)
  validation.check_positive_int("restarts", restarts)
  validation.check_images(x)
  logits_shape = jax.eval_shape(logits_fn, x).shape
  validation.check_logits(logits_shape, x.shape[0])
  if loss == "dlr" and logits_shape[1] < 3:
    raise ValueError(f"The 'dlr' attack loss needs at least 3 classes (it divides by "
                     f"z_π1 − z_π3); this model has {logits_shape[1]}. Use 'margin' or 'ce'.")
  if loss != "kl" or y is not None:
    if y is None:
      raise ValueError(f"The {loss!r} attack loss needs labels y; only 'kl' is label-free.")
    validation.check_labels(y, x.shape[0], logits_shape[1])


def _attack_once(logits_fn, x, y, logits_nat, key, statistic, eps, step_size, num_steps, norm,
                 loss, init, unroll):
  """One PGD run: (final iterate, max over its gradients of `statistic`, −inf without one).

  The first gradient is taken at the unprojected start (`geometry.random_start`), as in the
  references; every step ends in B(x, ε) ∩ [0, 1], so with num_steps >= 1 so does x_adv.
  """

  def total_loss(x_adv):
    return jnp.sum(objectives.objective(loss, logits_fn(x_adv), y, logits_nat))

  grad_fn = jax.grad(total_loss)

  def step(_, carry):
    x_adv, largest = carry
    grad = grad_fn(x_adv)
    if statistic is not None:
      largest = jnp.maximum(largest, statistic(grad))
    x_adv = x_adv + step_size * geometry.ascent_direction(grad, norm, x_adv)
    return geometry.project(x_adv, x, eps, norm), largest

  start = geometry.random_start(key, x, eps, norm, init)
  return jax.lax.fori_loop(0, num_steps, step,
                           (start, jnp.full((x.shape[0],), -jnp.inf, x.dtype)), unroll=unroll)


def _success_and_loss(logits_fn, x_adv, y, logits_nat, loss):
  """Per-example (attack succeeded, objective value) used to rank restarts."""
  logits = logits_fn(x_adv)
  reference = jnp.argmax(logits_nat, axis=-1) if loss == "kl" else y
  success = jnp.argmax(logits, axis=-1) != reference
  return success, objectives.objective(loss, logits, y, logits_nat)


def pgd_with_gradient_max(logits_fn: LogitsFn, x: jax.Array, y: jax.Array | None,
                          statistic: Callable[[jax.Array], jax.Array] | None, *, key, eps,
                          step_size, num_steps: int, norm: str = "linf", loss: str = "ce",
                          init: str = "uniform", restarts: int = 1,
                          unroll: bool | int = False) -> tuple[jax.Array, jax.Array]:
  """`pgd` that also returns, per example, the largest `statistic(∇ₓ loss)` ([B, ...] -> [B])
  over every gradient the attack took (all restarts): (x_adv, [B]), from the attack's own
  gradients at no extra cost. Without a statistic the second output is −inf.
  """
  _check_args(logits_fn, x, y, eps, step_size, num_steps, norm, loss, init, restarts)
  logits_nat = jax.lax.stop_gradient(logits_fn(x)) if loss == "kl" or restarts > 1 else None
  args = (statistic, eps, step_size, num_steps, norm, loss, init, unroll)
  # Restart r draws its start from fold_in(key, r): the first restart is the single-restart
  # attack itself, so more restarts can only strengthen the result, example by example.
  best_x, largest = _attack_once(logits_fn, x, y, logits_nat, jax.random.fold_in(key, 0),
                                 *args)
  if restarts > 1:
    best_success, best_loss = _success_and_loss(logits_fn, best_x, y, logits_nat, loss)
    for restart in range(1, restarts):
      x_adv, restart_largest = _attack_once(logits_fn, x, y, logits_nat,
                                            jax.random.fold_in(key, restart), *args)
      success, value = _success_and_loss(logits_fn, x_adv, y, logits_nat, loss)
      # The per-example worst case: a success beats a failure, then the larger loss wins.
      better = (success & ~best_success) | ((success == best_success) & (value > best_loss))
      best_x = jnp.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, best_x)
      best_success, best_loss = best_success | success, jnp.where(better, value, best_loss)
      largest = jnp.maximum(largest, restart_largest)
  return jax.lax.stop_gradient(best_x), jax.lax.stop_gradient(largest)


def pgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array | None, *, key, eps, step_size,
        num_steps: int, norm: str = "linf", loss: str = "ce", init: str = "uniform",
        restarts: int = 1, unroll: bool | int = False) -> jax.Array:
  """Projected gradient ascent on `loss` within B(x, eps) ∩ [0, 1]; returns x_adv.

  logits_fn: x -> [B, K] logits in evaluation mode. norm: "linf" | "l2" | "l1" (ℓ1: sparse
  steps, see `geometry.ascent_direction`, and the exact projection onto the ball ∩ box; the
  mass a random start puts off a sparse optimum decays slowly, so init="none" suits it).
  loss: "ce", "margin" (the logit margin, Carlini & Wagner's: PGD on it is the CW attack), "kl"
  (label-free, against the natural prediction: the TRADES inner attack; y may be None) or
  "dlr". init: "uniform" (in the ball), "normal" (x + 0.001·N(0, 1)) or "none"; the first
  gradient is taken at the start as drawn, before any clipping to [0, 1], as in the TRADES and
  Madry references. With restarts > 1 each example keeps its worst case over the restarts.
  The final iterate is returned, as in the reference implementations. unroll: the step loop's
  `lax.fori_loop` unroll; rolled (False) is as fast on XLA:CPU (docs/benchmarks.md), True
  unrolls it for XLA's cost analysis, which counts a rolled loop's body once.
  """
  return pgd_with_gradient_max(logits_fn, x, y, None, key=key, eps=eps, step_size=step_size,
                               num_steps=num_steps, norm=norm, loss=loss, init=init,
                               restarts=restarts, unroll=unroll)[0]
