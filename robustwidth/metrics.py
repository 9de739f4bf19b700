"""Natural accuracy, robust accuracy and perturbation stability, from counts.

All three come from the same adversarial batch (docs/paper.md §2). Every example falls in
exactly one of five decomposition cells (nat = argmax f(x), adv = argmax f(x̂)):

    correct_stable         nat = y, adv = nat            (robust)
    correct_unstable       nat = y, adv ≠ nat
    wrong_stable           nat ≠ y, adv = nat
    wrong_adv_correct      nat ≠ y, adv = y               (robust: the attack fixed it)
    wrong_unstable_wrong   nat ≠ y, adv ≠ nat, adv ≠ y

Aggregate across batches by summing counts (`add_counts`), then divide (`fractions`): never
average per-batch fractions.
"""
import jax
import jax.numpy as jnp
import numpy as np

from robustwidth import validation

CELLS = ("correct_stable", "correct_unstable", "wrong_stable", "wrong_adv_correct",
         "wrong_unstable_wrong")


def robustness_counts(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array,
                      mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """Per-cell counts plus `count`, `correct`, `robust`, `stable`; `mask` drops padding."""
  nat = jnp.argmax(logits_nat, axis=-1)
  adv = jnp.argmax(logits_adv, axis=-1)
  weight = jnp.ones_like(labels, jnp.int32) if mask is None else mask.astype(jnp.int32)
  correct, stable, adv_correct = nat == labels, adv == nat, adv == labels
  cells = {
      "correct_stable": correct & stable,
      "correct_unstable": correct & ~stable,
      "wrong_stable": ~correct & stable,
      "wrong_adv_correct": ~correct & adv_correct,
      "wrong_unstable_wrong": ~correct & ~stable & ~adv_correct,
  }
  counts = {name: jnp.sum(cell * weight) for name, cell in cells.items()}
  counts["count"] = jnp.sum(weight)
  counts["correct"] = jnp.sum(correct * weight)
  counts["robust"] = jnp.sum(adv_correct * weight)
  counts["stable"] = jnp.sum(stable * weight)
  return counts


def add_counts(a: dict, b: dict) -> dict:
  return {k: a[k] + b[k] for k in b} if a else dict(b)


def fractions(counts: dict) -> dict[str, float]:
  """natural_accuracy, robust_accuracy, perturbation_stability in [0, 1], plus the counts."""
  counts = {k: int(np.asarray(v)) for k, v in counts.items()}
  n = counts["count"]
  if n == 0:
    raise ValueError("No examples were counted: the evaluation set is empty.")
  return {
      "natural_accuracy": counts["correct"] / n,
      "robust_accuracy": counts["robust"] / n,
      "perturbation_stability": counts["stable"] / n,
      **counts,
  }


def robustness(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array) -> dict:
  """The contract's one-batch summary: the three accuracies (fractions) and the cell counts.

  Checks its inputs as the attacks do: [B, K] logits of one shape, finite; labels [B] in
  [0, K)."""
  for name, logits in (("logits_nat", logits_nat), ("logits_adv", logits_adv)):
    if np.ndim(logits) != 2 or np.shape(logits) != np.shape(logits_nat):
      raise ValueError(f"{name} must be [B, K] logits, both of one shape; got "
                       f"{np.shape(logits_nat)} and {np.shape(logits_adv)}.")
    validation.check_finite_logits(logits, name)
  batch_size, num_classes = np.shape(logits_nat)
  validation.check_labels(labels, batch_size, num_classes, name="labels")
  return fractions(robustness_counts(logits_nat, logits_adv, labels))
