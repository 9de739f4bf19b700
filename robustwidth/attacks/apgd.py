"""Auto-PGD (Croce & Hein, ICML 2020): APGD on cross-entropy or DLR, and the targeted APGD-T of
AutoAttack, on ℓ∞, ℓ2 and ℓ1 balls.

The reference's settings (fra31/auto-attack): 100 iterations from a random point on the sphere
of radius ε, initial step 2ε, momentum 0.75, and checkpoints at 22% of the iterations, then after
windows shrinking by 3% down to 6%. At a checkpoint an example halves its step and restarts from
its best point if its loss rose in at most ρ = 0.75 of the window's steps, or if the last
checkpoint left it unhalved and its best loss has not improved since.

ℓ1 is APGD-ℓ1 (Croce & Hein, ICML 2021, "Mind the box"), as AutoAttack runs it: no momentum;
steps of size ε (at first) along the signs of the top-k gradient coordinates, normalized to
unit ℓ1 norm, then the exact projection onto B₁(x, ε) ∩ [0, 1]; k starts at 20% of the inputs.
Every 4% of the iterations the sparsity of the best point sets k (a third below it); where it
fell by 5% or more, the step resets to ε and the run restarts from the best point, elsewhere
the step shrinks by 1.5 (down to ε/10). Each run goes through ε-balls of 3ε, 2ε and ε for 30%,
30% and 40% of its iterations, each stage starting from the best point of the one before, from
a Gaussian start projected onto the 3ε ball; only the last stage's successes count.

Like the reference, an attack returns, for each example it fools, the last misclassified
iterate it visited, and the clean point for every other example (clean errors included: they
are not attacked). Every random draw comes from a per-example key, so an example's result does
not depend on the rest of its batch.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from robustwidth import validation
from robustwidth.attacks import components, geometry, objectives

LOSSES = ("ce", "dlr")
MOMENTUM = 0.75
RHO = 0.75
L1_EPS_SCHEDULE = ((3.0, 0.3), (2.0, 0.3), (1.0, 0.4))   # (radius / ε, share of iterations)
L1_INITIAL_SPARSITY = 0.2


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
  [0, 1]; for ℓ1, x + t (t Gaussian) projected onto B₁(x, ε) ∩ [0, 1].

  `keys` holds one key per example.
  """
  if norm == "l1":
    t = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    return geometry.project_l1(x + t, x, eps)
  draw = jax.random.uniform if norm == "linf" else jax.random.normal
  args = (-1.0, 1.0) if norm == "linf" else ()
  t = jax.vmap(lambda k: draw(k, x.shape[1:], x.dtype, *args))(keys)
  return jnp.clip(x + eps * t / components.rows(geometry.norm(t, norm) + 1e-12, t), 0.0, 1.0)


def _loss_and_grad(logits_fn, loss_fn, eot=None):
  """(z, i) -> (per-example loss [B], logits, ∇_z Σ loss) at evaluation i; one forward and one
  backward pass.

  eot = (randomized, draws, keys): `randomized(z, key)` is a randomized model; the gradient is
  its mean over `draws` draws (expectation over transformation, Athalye et al. 2018), the loss
  and logits those of the last draw, as in the reference. Draw j of evaluation i runs each
  example alone with fold_in(fold_in(keys[b], i), j) (`components.per_example_draws`).
  """

  def total(z, *keys):
    logits = logits_fn(z) if eot is None else components.per_example_draws(eot[0], z, *keys)
    per_example = loss_fn(logits)
    return jnp.sum(per_example), (per_example, logits)

  def once(z, *keys):
    (_, (per_example, logits)), grad = jax.value_and_grad(total, has_aux=True)(z, *keys)
    return per_example, logits, grad

  if eot is None:
    return lambda z, i: once(z)
  _, draws, keys = eot

  def evaluate(z, i):
    def draw(j, carry):
      draw_keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, i), j))(keys)
      per_example, logits, grad = once(z, draw_keys)
      return per_example, logits, carry[2] + grad

    shapes = jax.eval_shape(once, z, keys)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    per_example, logits, grad = jax.lax.fori_loop(0, draws, draw, zeros)
    return per_example, logits, grad / draws

  return evaluate


def apgd_run(logits_fn, x, y, start, loss_fn, eps, *, norm: str, num_steps: int,
             momentum: float = MOMENTUM, rho: float = RHO, eot=None):
  """One APGD run from `start`, maximizing the per-example `loss_fn(logits)` (its gradient
  in expectation over transformations with `eot`, see `_loss_and_grad`).

  Returns (x_fooled, fooled): fooled[i] says some visited iterate (the start included) was
  misclassified, and x_fooled[i] is the last such iterate (the start where there is none).
  """
  evaluate = _loss_and_grad(logits_fn, loss_fn, eot)
  thresholds = jnp.asarray(checkpoint_thresholds(num_steps, rho))
  loss, logits, grad = evaluate(start, 0)
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
    loss, logits, grad = evaluate(x_adv, i + 1)
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

  c = jax.lax.fori_loop(0, num_steps, body, carry)  # rolled (docs/benchmarks.md)
  return c["x_fooled"], c["fooled"]


def l1_stage_steps(num_steps: int) -> list[int]:
  """Iterations of the 3ε, 2ε and ε stages: ⌈30%⌉, ⌈30%⌉ and the rest, as the reference."""
  first = [math.ceil(share * num_steps) for _, share in L1_EPS_SCHEDULE[:-1]]
  return first + [num_steps - sum(first)]


def _nonzero(v):
  return jnp.sum(components.flat(v) != 0, axis=1).astype(jnp.float32)


def apgd_l1_run(logits_fn, x, y, start, loss_fn, eps, *, num_steps: int):
  """One APGD-ℓ1 stage of radius `eps` from `start` (in the ball), maximizing `loss_fn`.

  Returns (x_best, x_fooled, fooled): the highest-loss iterate, and as `apgd_run`.
  """
  evaluate = _loss_and_grad(logits_fn, loss_fn)
  size = math.prod(x.shape[1:])
  interval = max(int(0.04 * num_steps), 1)
  loss, logits, grad = evaluate(start, 0)
  sparsity = _nonzero(start - x)
  full_step = jnp.full((x.shape[0],), eps, x.dtype)
  carry = dict(x_adv=start, grad=grad, step=full_step, share=sparsity / size / 1.5,
               sparsity=sparsity, x_best=start, grad_best=grad, loss_best=loss,
               x_fooled=start, fooled=jnp.argmax(logits, -1) != y)

  def body(i, c):
    count = size - jnp.floor(jnp.clip((1.0 - c["share"]) * size, 0, size - 1))
    direction = geometry.sparse_sign(c["grad"], count)
    x_adv = geometry.project_l1(c["x_adv"] + components.rows(c["step"], x) * direction, x, eps)
    loss, logits, grad = evaluate(x_adv, i + 1)
    wrong = jnp.argmax(logits, -1) != y
    improved = loss > c["loss_best"]
    c = dict(
        c, x_adv=x_adv, grad=grad,
        x_fooled=jnp.where(components.rows(wrong, x), x_adv, c["x_fooled"]),
        fooled=c["fooled"] | wrong,
        x_best=jnp.where(components.rows(improved, x), x_adv, c["x_best"]),
        grad_best=jnp.where(components.rows(improved, x), grad, c["grad_best"]),
        loss_best=jnp.where(improved, loss, c["loss_best"]))
    at_check = (i + 1) % interval == 0
    sparsity = _nonzero(c["x_best"] - x)
    sparser = at_check & (sparsity / c["sparsity"] < 0.95)
    step = jnp.clip(jnp.where(sparser, eps, c["step"] / 1.5), 0.1 * eps, eps)
    return dict(
        c, step=jnp.where(at_check, step, c["step"]),
        share=jnp.where(at_check, sparsity / size / 1.5, c["share"]),
        sparsity=jnp.where(at_check, sparsity, c["sparsity"]),
        x_adv=jnp.where(components.rows(sparser, x), c["x_best"], c["x_adv"]),
        grad=jnp.where(components.rows(sparser, x), c["grad_best"], c["grad"]))

  c = jax.lax.fori_loop(0, num_steps, body, carry)
  return c["x_best"], c["x_fooled"], c["fooled"]


def apgd_l1_schedule(logits_fn, x, y, keys, loss_fn, eps, *, num_steps: int):
  """One APGD-ℓ1 run through the 3ε, 2ε, ε stages (module doc); (x_fooled, fooled) of the
  last stage, the only one whose iterates lie in the ε-ball."""
  point = random_start(keys, x, L1_EPS_SCHEDULE[0][0] * eps, "l1")
  for (factor, _), steps in zip(L1_EPS_SCHEDULE, l1_stage_steps(num_steps)):
    point = geometry.project_l1(point, x, factor * eps)
    point, x_fooled, fooled = apgd_l1_run(logits_fn, x, y, point, loss_fn, factor * eps,
                                          num_steps=steps)
  return x_fooled, fooled


def _run(logits_fn, x, y, keys, loss_fn, eps, norm, num_steps, eot=None):
  """One APGD run of the norm's kind from the per-example `keys`: (x_fooled, fooled)."""
  if norm == "l1":
    return apgd_l1_schedule(logits_fn, x, y, keys, loss_fn, eps, num_steps=num_steps)
  return apgd_run(logits_fn, x, y, random_start(keys, x, eps, norm), loss_fn, eps, norm=norm,
                  num_steps=num_steps, eot=eot)


def _loss_fn(loss: str, y):
  if loss == "ce":
    return lambda logits: objectives.objective("ce", logits, y, None)
  return lambda logits: objectives.dlr(logits, y)


def apgd_batch(logits_fn, x, y, keys, eps, *, norm: str = "linf", loss: str = "ce",
               num_steps: int = 100, restarts: int = 1, randomized=None,
               eot_draws: int = 1) -> jax.Array:
  """`apgd` with one PRNG key per example (`keys`: [B] keys); unchecked, for jit.

  With a `randomized(x, key)` model, each gradient is its mean over `eot_draws` draws, each
  example's drawn from its own key (restart r: fold_in(fold_in(keys[b], r), 1)), and
  `logits_fn` decides success.
  """

  def run_one(r):
    eot = None if randomized is None else (
        randomized, eot_draws,
        jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, r), 1))(keys))
    return _run(logits_fn, x, y, jax.vmap(lambda k: jax.random.fold_in(k, r))(keys),
                _loss_fn(loss, y), eps, norm, num_steps, eot)

  return components.keep_first_success(logits_fn, x, y, restarts, run_one)


def apgd_targeted_batch(logits_fn, x, y, keys, eps, *, norm: str = "linf",
                        num_steps: int = 100, num_targets: int = 9) -> jax.Array:
  """`apgd_targeted` with one PRNG key per example; unchecked, for jit."""
  ranked = components.ranked_classes(logits_fn, x)

  def run_one(t):
    target = jnp.take(ranked, t + 1, axis=1)
    return _run(logits_fn, x, y, jax.vmap(lambda k: jax.random.fold_in(k, t))(keys),
                lambda logits: objectives.targeted_dlr(logits, y, target), eps, norm,
                num_steps)

  return components.keep_first_success(logits_fn, x, y, num_targets, run_one)


_apgd_jit = jax.jit(apgd_batch, static_argnames=("norm", "loss", "num_steps", "restarts",
                                                "eot_draws"))
_apgd_targeted_jit = jax.jit(apgd_targeted_batch,
                             static_argnames=("norm", "num_steps", "num_targets"))


def check_num_steps(num_steps, norm: str) -> None:
  validation.check_positive_int("num_steps", num_steps)
  if norm == "l1" and num_steps < 3:
    raise ValueError(f"APGD-ℓ1 splits its iterations over three ε stages and needs "
                     f"num_steps >= 3, got {num_steps}.")


def apgd(logits_fn: components.LogitsFn, x, y, *, key, eps, norm: str = "linf",
         loss: str = "ce", num_steps: int = 100, restarts: int = 1) -> jax.Array:
  """APGD-CE (loss="ce") or APGD-DLR (loss="dlr"); returns x_adv.

  x_adv[i] is an adversarial example inside B(x_i, eps) ∩ [0, 1] where one was found, x_i
  otherwise. With restarts > 1, each restart runs from a new random start, as the reference
  runs it only on the examples the earlier ones did not fool.
  """
  validation.check_choice("APGD loss", loss, LOSSES)
  validation.check_positive_int("restarts", restarts)
  check_num_steps(num_steps, norm)
  components.check_args(logits_fn, x, y, eps, norm, min_classes=3 if loss == "dlr" else 2)
  keys = jax.random.split(key, x.shape[0])
  return jax.lax.stop_gradient(
      _apgd_jit(components.as_partial(logits_fn), x, y, keys, eps, norm=norm, loss=loss,
                num_steps=num_steps, restarts=restarts))


def apgd_targeted(logits_fn: components.LogitsFn, x, y, *, key, eps, norm: str = "linf",
                  num_steps: int = 100, num_targets: int = 9) -> jax.Array:
  """APGD-T: APGD on the targeted DLR loss, once for each of the `num_targets` classes the
  model ranks highest after the top one on the clean input; returns x_adv (as `apgd`)."""
  check_num_steps(num_steps, norm)
  components.check_num_targets(
      num_targets, components.check_args(logits_fn, x, y, eps, norm, min_classes=4))
  keys = jax.random.split(key, x.shape[0])
  return jax.lax.stop_gradient(
      _apgd_targeted_jit(components.as_partial(logits_fn), x, y, keys, eps, norm=norm,
                         num_steps=num_steps, num_targets=num_targets))
