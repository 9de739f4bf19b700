"""Input-gradient norms and local Lipschitz estimates of a loss around each input
(docs/paper.md §3).

In the threat norm ‖·‖ with dual norm ‖·‖_*, the local Lipschitz constant of a loss L on the
ball B(x, ε) is max_{x' ∈ B(x, ε)} ‖∇L(x')‖_*, and max_{x̂ ∈ B(x, ε)} L(x̂) − L(x) is at most ε
times it (ℓ1 is the dual of ℓ∞). It cannot be computed exactly for a network; the three
estimators here are each a lower bound on it, computed differently:

  lipschitz_attack_iterates    the authors' probe: max of ‖∇L‖_* over the points a PGD attack
                               on L visits (`pgd_lipschitz_probe` returns the attack's x_adv
                               with it, as the training and evaluation steps use it);
  lipschitz_gradient_ascent    projected gradient ascent on ‖∇L‖_* itself inside the ball;
  lipschitz_finite_difference  |L(x̂) − L(x)| / ‖x̂ − x‖ for a given x̂ (the mean value theorem).

Losses, per example ([B] from [B, K] logits):
  "ce"      cross-entropy at the label y;
  "margin"  the logit margin max_{j≠y} z_j − z_y (for a ReLU network piecewise linear in x, so
            its gradient is the network's own, free of softmax saturation);
  "kl"      KL(softmax f(x_natural) ‖ softmax f(x')), the TRADES regularizer with the natural
            prediction held fixed. It is 0 at x' = x_natural, a minimum, so its gradient there
            is exactly 0: it says something only away from x_natural, at attack iterates or
            at a given x̂. Label-free: y may be None.

Examples never interact (the model runs in evaluation mode), so the gradient of the summed
loss is the per-example gradient.

  logits_fn = models.logits_fn(graphdef, params, model_state)
  lipschitz.input_gradient_norm(logits_fn, x, y, ord=1)                # ‖∇ₓ CE‖₁, [B]
  lipschitz.lipschitz_attack_iterates(logits_fn, x, key=jax.random.key(0), eps=0.031,
                                      step_size=0.007, num_steps=10)   # the authors' probe
"""
import jax
import jax.numpy as jnp
import numpy as np

from robustwidth import attacks, validation
from robustwidth.attacks import geometry, objectives

GRADIENT_LOSSES = ("ce", "kl", "margin")
GRADIENT_ORDS = (1, 2, np.inf)
_TINY = 1e-12


def _check(logits_fn, x, y, loss):
  validation.check_choice("loss", loss, GRADIENT_LOSSES)
  validation.check_images(x)
  logits_shape = jax.eval_shape(logits_fn, x).shape
  validation.check_logits(logits_shape, x.shape[0])
  if y is None and loss != "kl":
    raise ValueError(f"The {loss!r} loss needs labels y; only 'kl' is label-free.")
  if y is not None:
    validation.check_labels(y, x.shape[0], logits_shape[1])


def _check_ball(eps, step_size, num_steps, norm, init):
  validation.check_choice("norm", norm, geometry.NORMS)
  validation.check_choice("init", init, geometry.INITS)
  validation.check_nonnegative("eps", eps)
  validation.check_nonnegative("step_size", step_size)
  validation.check_positive_int("num_steps", num_steps)


def _objective(logits_fn, loss, y, logits_nat):
  """x' -> [B] per-example loss; `logits_nat` is the fixed reference of "kl"."""
  return lambda z: objectives.objective(loss, logits_fn(z), y, logits_nat)


def _input_gradient(objective, x):
  return jax.grad(lambda z: jnp.sum(objective(z)))(x)


def input_gradient_norm(logits_fn: attacks.LogitsFn, x: jax.Array, y: jax.Array | None, *,
                        ord=1, loss: str = "ce",
                        x_natural: jax.Array | None = None) -> jax.Array:
  """‖∇ₓ L(x)_i‖_ord per example: [B].

  ord: 1, 2 or inf, the norm taken of the gradient (ord=1 is the Lipschitz constant for the
  ℓ∞ threat model, ord=2 for ℓ2). loss: "ce", "margin" or "kl" (see the module docstring).
  "kl" needs `x_natural`, the clean inputs whose prediction is the reference, and is evaluated
  at x (at x = x_natural it is exactly 0); the other losses take no `x_natural`.
  """
  validation.check_choice("ord", ord, GRADIENT_ORDS)
  _check(logits_fn, x, y, loss)
  if (loss == "kl") != (x_natural is not None):
    raise ValueError("loss='kl' needs x_natural (the clean inputs the KL compares against; at "
                     "x = x_natural its gradient is exactly 0) and the other losses take none.")
  logits_nat = None
  if loss == "kl":
    if x_natural.shape != x.shape:
      raise ValueError(f"x_natural must have the shape of x {x.shape}, got {x_natural.shape}.")
    logits_nat = jax.lax.stop_gradient(logits_fn(x_natural))
  grad = _input_gradient(_objective(logits_fn, loss, y, logits_nat), x)
  if ord == 1:
    return geometry.dual_norm(grad, "linf")
  return geometry.norm(grad, "l2" if ord == 2 else "linf")


def pgd_lipschitz_probe(logits_fn: attacks.LogitsFn, x: jax.Array, y: jax.Array | None, *,
                        key, eps, step_size, num_steps: int, norm: str = "linf",
                        loss: str = "ce", init: str = "uniform", restarts: int = 1,
                        unroll: bool | int = False) -> tuple[jax.Array, jax.Array]:
  """`attacks.pgd` (same arguments) and the authors' probe from its own gradients: (x_adv,
  probe), probe[i] the max over every iterate the attack took a gradient at (all restarts) of
  the dual norm of the per-example input gradient of the attack loss (ℓ1 for ℓ∞). With
  loss="kl" and the TRADES settings this is exactly the authors' logged quantity.
  """
  return attacks.pgd_with_gradient_max(
      logits_fn, x, y, lambda grad: geometry.dual_norm(grad, norm), key=key, eps=eps,
      step_size=step_size, num_steps=num_steps, norm=norm, loss=loss, init=init,
      restarts=restarts, unroll=unroll)


def lipschitz_attack_iterates(logits_fn: attacks.LogitsFn, x: jax.Array,
                              y: jax.Array | None = None, *, key, eps, step_size,
                              num_steps: int, norm: str = "linf", loss: str = "kl",
                              init: str = "normal", restarts: int = 1) -> jax.Array:
  """The authors' local-Lipschitz probe: [B], the max of ‖∇L‖_* (dual of `norm`) over the
  iterates of a PGD attack on L at which it took a gradient (`pgd_lipschitz_probe`).

  The defaults with eps=0.031, step_size=0.007, num_steps=10 are the TRADES inner attack and
  the quantity the authors log.
  """
  _check(logits_fn, x, y, loss)
  return pgd_lipschitz_probe(logits_fn, x, y, key=key, eps=eps, step_size=step_size,
                             num_steps=num_steps, norm=norm, loss=loss, init=init,
                             restarts=restarts)[1]


def lipschitz_gradient_ascent(logits_fn: attacks.LogitsFn, x: jax.Array,
                              y: jax.Array | None = None, *, key, eps, step_size,
                              num_steps: int, norm: str = "linf", loss: str = "kl",
                              init: str = "uniform") -> jax.Array:
  """Projected gradient ascent on g(x') = ‖∇L(x')‖_* inside B(x, ε) ∩ [0, 1]: [B], the
  largest g seen at x, the start and every iterate.

  Steps follow the steepest-ascent direction of g in the threat norm (sign for ℓ∞), which
  needs second derivatives of L in x. For a ReLU network the margin loss is piecewise linear
  in x, so g is piecewise constant, its gradient 0, and the estimate is g at x and the start.
  """
  _check(logits_fn, x, y, loss)
  _check_ball(eps, step_size, num_steps, norm, init)
  logits_nat = jax.lax.stop_gradient(logits_fn(x)) if loss == "kl" else None
  objective = _objective(logits_fn, loss, y, logits_nat)

  def dual_gradient_norm(z):
    value = geometry.dual_norm(_input_gradient(objective, z), norm)
    return jnp.sum(value), value

  ascent = jax.grad(dual_gradient_norm, has_aux=True)

  def step(_, carry):
    z, best = carry
    direction, value = ascent(z)
    z = geometry.project(z + step_size * geometry.ascent_direction(direction, norm, z), x,
                         eps, norm)
    return z, jnp.maximum(best, value)

  # Projected, unlike an attack's start: every point g is measured at lies in the ball.
  start = geometry.project(geometry.random_start(key, x, eps, norm, init), x, eps, norm)
  z, best = jax.lax.fori_loop(0, num_steps, step, (start, dual_gradient_norm(x)[1]))
  return jax.lax.stop_gradient(jnp.maximum(best, dual_gradient_norm(z)[1]))


def lipschitz_finite_difference(logits_fn: attacks.LogitsFn, x: jax.Array, x_adv: jax.Array,
                                y: jax.Array | None = None, *, norm: str = "linf",
                                loss: str = "kl") -> jax.Array:
  """|L(x_adv) − L(x)| / ‖x_adv − x‖ per example: [B], 0 where x_adv = x.

  A lower bound on the Lipschitz constant of L, in the threat norm, on any convex set holding
  both points. For "kl", L(x) = 0 and L(x_adv) = KL(f(x) ‖ f(x_adv)).
  """
  _check(logits_fn, x, y, loss)
  validation.check_choice("norm", norm, geometry.NORMS)
  validation.check_images(x_adv, "x_adv")
  if x_adv.shape != x.shape:
    raise ValueError(f"x_adv must have the shape of x {x.shape}, got {x_adv.shape}.")
  logits_nat = jax.lax.stop_gradient(logits_fn(x)) if loss == "kl" else None
  objective = _objective(logits_fn, loss, y, logits_nat)
  change = jnp.abs(objective(x_adv) - objective(x))
  distance = geometry.norm(x_adv - x, norm)
  return jnp.where(distance > 0, change / jnp.maximum(distance, _TINY), 0.0)
