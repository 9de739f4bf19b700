"""Per-example attack objectives, each to be maximized: [B] from [B, K] logits.

Attacks differentiate the sum of these, so one example's gradient never depends on the rest of
its batch.
"""
import jax
import jax.numpy as jnp

from robustwidth import losses

LOSSES = ("ce", "margin", "kl", "dlr")


def _true_logit(logits, labels):
  return jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]


def best_other_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """max_{j ≠ y} z_j."""
  num_classes = logits.shape[-1]
  others = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, logits)
  return jnp.max(others, axis=-1)


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The logit margin max_{j≠y} z_j − z_y (Carlini & Wagner's loss, the "CW" attacks'); positive
  exactly when the example is misclassified.

  The TRADES code clamps the margin at −50; unclamped, the gradient is the same wherever the
  clamp is inactive, and ascent does not stop early.
  """
  return best_other_logit(logits, labels) - _true_logit(logits, labels)


def dlr(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Difference-of-logits ratio (Croce & Hein 2020), the untargeted form:
  −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12), z_π sorted in decreasing order."""
  top = jax.lax.top_k(logits, 3)[0]
  return margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
  """Targeted difference-of-logits ratio (Croce & Hein 2020), the APGD-T objective:
  −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2 + 1e-12), z_π sorted in decreasing order.

  Positive exactly when the target logit beats the true one; the denominator makes it
  invariant to shifting and rescaling the logits. Needs at least four classes.
  """
  top = jax.lax.top_k(logits, 4)[0]
  gap = _true_logit(logits, targets) - _true_logit(logits, labels)
  return gap / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def objective(name: str, logits: jax.Array, labels: jax.Array,
              logits_nat: jax.Array | None) -> jax.Array:
  """The named objective; `kl` is label-free and compares against `logits_nat`."""
  if name == "ce":
    return losses.cross_entropy_per_example(logits, labels)
  if name == "margin":
    return margin(logits, labels)
  if name == "kl":
    return losses.trades_kl(logits_nat, logits)
  if name == "dlr":
    return dlr(logits, labels)
  raise ValueError(f"Unknown attack loss {name!r}; use one of {LOSSES}.")
