"""Pieces shared by the attacks: the `LogitsFn` they attack and, for the AutoAttack components
(APGD, APGD-T, FAB-T, Square), argument checks, target ranking and the per-example "first
success wins" combination of runs."""
from typing import Callable

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from robustwidth import validation
from robustwidth.attacks import geometry

# The model an attack sees: a float32 batch in [0, 1] -> [B, K] logits, in evaluation mode. A
# `jax.tree_util.Partial` (as `robustwidth.models.logits_fn` returns) carries the weights as
# pytree leaves, so a jitted attack takes them as arguments rather than as constants.
LogitsFn = Callable[[jax.Array], jax.Array]


def as_partial(logits_fn: LogitsFn) -> Partial:
  """`logits_fn` as a pytree that jitted attacks take as an argument: a
  `jax.tree_util.Partial` passes through (its arrays become inputs of the compiled attack),
  any other callable is wrapped (compiled once per function object, its closure constant)."""
  return logits_fn if isinstance(logits_fn, Partial) else Partial(logits_fn)


def flat(v: jax.Array) -> jax.Array:
  """[B, ...] -> [B, D]."""
  return v.reshape(v.shape[0], -1)


def rows(v: jax.Array, like: jax.Array) -> jax.Array:
  """Broadcasts a [B] vector against a [B, ...] batch."""
  return v.reshape((-1,) + (1,) * (like.ndim - 1))


def per_example_draws(randomized, x, keys) -> jax.Array:
  """A randomized model `randomized(x, key)` run on each example alone, example b with keys[b]:
  every draw then depends on its example and key only, never on the rest of the batch."""
  return jax.vmap(lambda example, key: randomized(example[None], key)[0])(x, keys)


def misclassified(logits_fn, x, y) -> jax.Array:
  return jnp.argmax(logits_fn(x), -1) != y


def keep_first_success(logits_fn, x, y, runs: int, run_one) -> jax.Array:
  """Runs `run_one(r) -> (x_r, fooled_r)` for r < runs; each example keeps its first success
  and the clean point where none succeeds.

  As in the reference, where each run attacks only the examples the earlier runs left robust
  (and no run attacks a clean error, which keeps its clean point). Runs are per-example, so
  running them on every row and keeping only new successes gives the same result.
  """

  def body(r, carry):
    x_adv, fooled = carry
    x_r, fooled_r = run_one(r)
    new = fooled_r & ~fooled
    return jnp.where(rows(new, x), x_r, x_adv), fooled | new

  x_adv, _ = jax.lax.fori_loop(0, runs, body, (x, misclassified(logits_fn, x, y)))
  return x_adv


def ranked_classes(logits_fn, x) -> jax.Array:
  """[B, K] classes by decreasing clean logit; column t + 1 is the t-th target of APGD-T and
  FAB-T (the top class is the true one on every example they attack)."""
  return jnp.argsort(-logits_fn(x), axis=-1)


def check_args(logits_fn, x, y, eps, norm: str, *, min_classes: int = 2) -> int:
  """Argument checks shared by the components; returns the number of classes."""
  validation.check_choice("norm", norm, geometry.NORMS)
  validation.check_nonnegative("eps", eps)
  validation.check_images(x)
  logits_shape = jax.eval_shape(logits_fn, x).shape
  validation.check_logits(logits_shape, x.shape[0])
  if y is None:
    raise ValueError("AutoAttack's components need the true labels y.")
  validation.check_labels(y, x.shape[0], logits_shape[1])
  if logits_shape[1] < min_classes:
    raise ValueError(f"This attack needs a model with at least {min_classes} classes, got "
                     f"{logits_shape[1]}.")
  return logits_shape[1]


def check_num_targets(num_targets, num_classes: int) -> None:
  validation.check_positive_int("num_targets", num_targets)
  if num_targets > num_classes - 1:
    raise ValueError(f"num_targets={num_targets} exceeds the {num_classes - 1} classes other "
                     f"than the true one; use num_targets <= {num_classes - 1}.")
