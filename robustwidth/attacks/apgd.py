"""Auto-PGD (Croce & Hein, ICML 2020): APGD on cross-entropy or DLR, and the targeted APGD-T of
AutoAttack, on ℓ∞ and ℓ2 balls.

The reference's settings (fra31/auto-attack): 100 iterations from a random point on the sphere
of radius ε, initial step 2ε, momentum 0.75, and checkpoints at 22% of the iterations, then after
windows shrinking by 3% down to 6%. At a checkpoint an example halves its step and restarts from
its best point if its loss rose in at most ρ = 0.75 of the window's steps, or if the last
checkpoint left it unhalved and its best loss has not improved since.

Like the reference, an attack returns, for each example it fools, the last misclassified
iterate it visited, and the clean point for every other example (clean errors included: they
are not attacked). Every random draw comes from a per-example key, so an example's result does
not depend on the rest of its batch.
"""
import jax
import jax.numpy as jnp
import numpy as np

from robustwidth import validation
from robustwidth.attacks import components, geometry, objectives

LOSSES = ("ce", "dlr")
# Loop form (measured): AutoAttack's 100-step loops are rolled on every backend. On XLA:CPU
# (WRN-10-4, 8×8 inputs, batch 256) APGD's rolled loop compiled in 5 s and ran 100 steps in
# 8.9 s, unroll=4 in 6 s and 8.9 s; fully unrolled, 20 steps took 17.5 s to compile (5.7 s
# rolled) for the same 2.0 s run, and 100 steps of a small MLP about 2 minutes.
MOMENTUM = 0.75
RHO = 0.75


def checkpoint_thresholds(num_steps: int, rho: float = RHO) -> np.ndarray:
  """[num_steps]: ρ·(window length) at the iterations that end a checkpoint window, −1
  elsewhere.

  An example whose loss increased in at most this many of the window's steps halves its step.
  """
  window = max(int(0.22 * num_steps), 1)
  shrink, shortest = max(int(0.03 * num_steps), 1), max(int(0.06 * num_steps), 1)
  thresholds = np.full((num_steps,), -1.0, np.float32)
  end = window - 1
  while end < num_steps:
    thresholds[end] = rho * window
    window = max(window - shrink, shortest)
    end += window
  return thresholds


def random_start(keys: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """APGD's start: x + ε·t/‖t‖ (t uniform in [−1, 1] for ℓ∞, Gaussian for ℓ2), clipped to
  [0, 1].

  `keys` holds one key per example.
  """
  draw = jax.random.uniform if norm == "linf" else jax.random.normal
  args = (-1.0, 1.0) if norm == "linf" else ()
  t = jax.vmap(lambda k: draw(k, x.shape[1:], x.dtype, *args))(keys)
  return jnp.clip(x + eps * t / components.rows(geometry.norm(t, norm) + 1e-12, t), 0.0, 1.0)


def _loss_and_grad(logits_fn, loss_fn):
  """z -> (per-example loss [B], logits, ∇_z Σ loss); one forward and one backward pass."""

  def total(z):
    logits = logits_fn(z)
    per_example = loss_fn(logits)
    return jnp.sum(per_example), (per_example, logits)

  def evaluate(z):
    (_, (per_example, logits)), grad = jax.value_and_grad(total, has_aux=True)(z)
    return per_example, logits, grad

  return evaluate


def apgd_run(logits_fn, x, y, start, loss_fn, eps, *, norm: str, num_steps: int,
             momentum: float = MOMENTUM, rho: float = RHO):
  """One APGD run from `start`, maximizing the per-example `loss_fn(logits)`.

  Returns (x_fooled, fooled): fooled[i] says some visited iterate (the start included) was
  misclassified, and x_fooled[i] is the last such iterate (the start where there is none).
  """
  evaluate = _loss_and_grad(logits_fn, loss_fn)
  thresholds = jnp.asarray(checkpoint_thresholds(num_steps, rho))
  loss, logits, grad = evaluate(start)
  batch = x.shape[0]
  carry = dict(
      x_adv=start, x_prev=start, grad=grad, step=jnp.full((batch,), 2.0 * eps, x.dtype),
      x_best=start, grad_best=grad, loss_best=loss,
      loss_prev=jnp.zeros_like(loss),                 # the reference compares step 0 with 0
      increases=jnp.zeros((batch,), jnp.float32),     # loss increases in the current window
      loss_best_at_check=loss, halved_at_check=jnp.ones((batch,), bool),
      x_fooled=start, fooled=jnp.argmax(logits, -1) != y)

  def body(i, c):
    a = jnp.where(i == 0, 1.0, momentum)
    step = components.rows(c["step"], x) * geometry.ascent_direction(c["grad"], norm)
    z = geometry.project(c["x_adv"] + step, x, eps, norm)
    x_adv = geometry.project(
        c["x_adv"] + a * (z - c["x_adv"]) + (1 - a) * (c["x_adv"] - c["x_prev"]), x, eps, norm)
    loss, logits, grad = evaluate(x_adv)
    wrong = jnp.argmax(logits, -1) != y
    improved = loss > c["loss_best"]
    c = dict(
        c, x_prev=c["x_adv"], x_adv=x_adv, grad=grad,
        x_fooled=jnp.where(components.rows(wrong, x), x_adv, c["x_fooled"]),
        fooled=c["fooled"] | wrong,
        increases=c["increases"] + (loss > c["loss_prev"]), loss_prev=loss,
        x_best=jnp.where(components.rows(improved, x), x_adv, c["x_best"]),
        grad_best=jnp.where(components.rows(improved, x), grad, c["grad_best"]),
        loss_best=jnp.where(improved, loss, c["loss_best"]))
    at_check = thresholds[i] >= 0
    halve = at_check & ((c["increases"] <= thresholds[i]) |
                        (~c["halved_at_check"] & (c["loss_best_at_check"] >= c["loss_best"])))
    return dict(
        c, step=jnp.where(halve, 0.5 * c["step"], c["step"]),
        x_adv=jnp.where(components.rows(halve, x), c["x_best"], c["x_adv"]),
        grad=jnp.where(components.rows(halve, x), c["grad_best"], c["grad"]),
        increases=jnp.where(at_check, 0.0, c["increases"]),
        halved_at_check=jnp.where(at_check, halve, c["halved_at_check"]),
        loss_best_at_check=jnp.where(at_check, c["loss_best"], c["loss_best_at_check"]))

  c = jax.lax.fori_loop(0, num_steps, body, carry)  # rolled: see "Loop form" above
  return c["x_fooled"], c["fooled"]


def _loss_fn(loss: str, y):
  if loss == "ce":
    return lambda logits: objectives.objective("ce", logits, y, None)
  return lambda logits: objectives.dlr(logits, y)


def apgd_batch(logits_fn, x, y, keys, eps, *, norm: str = "linf", loss: str = "ce",
               num_steps: int = 100, restarts: int = 1) -> jax.Array:
  """`apgd` with one PRNG key per example (`keys`: [B] keys); unchecked, for jit."""

  def run_one(r):
    start = random_start(jax.vmap(lambda k: jax.random.fold_in(k, r))(keys), x, eps, norm)
    return apgd_run(logits_fn, x, y, start, _loss_fn(loss, y), eps, norm=norm,
                    num_steps=num_steps)

  return components.keep_first_success(logits_fn, x, y, restarts, run_one)


def apgd_targeted_batch(logits_fn, x, y, keys, eps, *, norm: str = "linf",
                        num_steps: int = 100, num_targets: int = 9) -> jax.Array:
  """`apgd_targeted` with one PRNG key per example; unchecked, for jit."""
  ranked = components.ranked_classes(logits_fn, x)

  def run_one(t):
    target = jnp.take(ranked, t + 1, axis=1)
    start = random_start(jax.vmap(lambda k: jax.random.fold_in(k, t))(keys), x, eps, norm)
    return apgd_run(logits_fn, x, y, start,
                    lambda logits: objectives.targeted_dlr(logits, y, target), eps, norm=norm,
                    num_steps=num_steps)

  return components.keep_first_success(logits_fn, x, y, num_targets, run_one)


_apgd_jit = jax.jit(apgd_batch, static_argnames=("norm", "loss", "num_steps", "restarts"))
_apgd_targeted_jit = jax.jit(apgd_targeted_batch,
                             static_argnames=("norm", "num_steps", "num_targets"))


def apgd(logits_fn, x, y, *, key, eps, norm: str = "linf", loss: str = "ce",
         num_steps: int = 100, restarts: int = 1) -> jax.Array:
  """APGD-CE (loss="ce") or APGD-DLR (loss="dlr"); returns x_adv.

  x_adv[i] is an adversarial example inside B(x_i, eps) ∩ [0, 1] where one was found, x_i
  otherwise. With restarts > 1, each restart runs from a new random start, as the reference
  runs it only on the examples the earlier ones did not fool.
  """
  validation.check_choice("APGD loss", loss, LOSSES)
  validation.check_positive_int("restarts", restarts)
  validation.check_positive_int("num_steps", num_steps)
  components.check_args(logits_fn, x, y, eps, norm, min_classes=3 if loss == "dlr" else 2)
  keys = jax.random.split(key, x.shape[0])
  return jax.lax.stop_gradient(
      _apgd_jit(components.as_partial(logits_fn), x, y, keys, eps, norm=norm, loss=loss,
                num_steps=num_steps, restarts=restarts))


def apgd_targeted(logits_fn, x, y, *, key, eps, norm: str = "linf", num_steps: int = 100,
                  num_targets: int = 9) -> jax.Array:
  """APGD-T: APGD on the targeted DLR loss, once for each of the `num_targets` classes the
  model ranks highest after the top one on the clean input; returns x_adv (as `apgd`)."""
  validation.check_positive_int("num_steps", num_steps)
  components.check_num_targets(
      num_targets, components.check_args(logits_fn, x, y, eps, norm, min_classes=4))
  keys = jax.random.split(key, x.shape[0])
  return jax.lax.stop_gradient(
      _apgd_targeted_jit(components.as_partial(logits_fn), x, y, keys, eps, norm=norm,
                         num_steps=num_steps, num_targets=num_targets))
