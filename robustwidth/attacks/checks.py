"""Sanity checks that flag an unreliable robustness evaluation, in the spirit of AutoAttack's
`checks.py`: each one warns (`EvaluationWarning`) with what it saw, what it usually means and
what to do. `autoattack` runs the cheap ones itself; `check_eps_curve` judges the curve that
`autoattack.robustness_curve` measures.
"""
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from robustwidth.attacks import geometry, objectives


class EvaluationWarning(UserWarning):
  """A robustness evaluation may be unreliable."""


def _warn(message: str) -> None:
  warnings.warn(message, EvaluationWarning, stacklevel=3)


def check_randomized(logits_fn, x, *, calls: int = 3, tolerance: float = 1e-4) -> bool:
  """Warns if identical calls of `logits_fn` on `x` disagree; returns True if they did.

  Compares predictions and the logits normalized to unit ℓ2 norm per example, as the
  reference does.
  """
  outputs = [np.asarray(logits_fn(x), np.float64) for _ in range(calls)]
  unit = [o / (np.linalg.norm(o, axis=-1, keepdims=True) + 1e-10) for o in outputs]
  spread = max(float(np.max(np.linalg.norm(u - unit[0], axis=-1))) for u in unit)
  flips = any(np.any(o.argmax(-1) != outputs[0].argmax(-1)) for o in outputs)
  if flips or spread > tolerance:
    _warn(f"logits_fn gave different outputs for the same input in {calls} calls (largest "
          f"change of the normalized logits {spread:.2g}, predictions changed: {flips}). The "
          "model looks randomized, and attacks built for deterministic models overestimate its "
          "robustness. Evaluate it in evaluation mode (BatchNorm statistics, no dropout) with "
          "all randomness fixed, or attack the expectation over its randomness.")
    return True
  return False


def check_probabilities(logits: jax.Array, *, tolerance: float = 1e-5) -> bool:
  """Warns if a [B, K] model output looks like probabilities (in [0, 1], rows summing to 1)."""
  logits = np.asarray(logits, np.float64)
  if (logits.min() > -tolerance and logits.max() < 1 + tolerance and
      np.all(np.abs(logits.sum(-1) - 1) < tolerance)):
    _warn("logits_fn seems to return probabilities, not logits. Softmax outputs saturate, so "
          "gradients vanish and the margin and DLR losses lose their scale, which weakens every "
          "attack. Pass the model's pre-softmax logits.")
    return True
  return False


def zero_gradient_fraction(logits_fn, x, y) -> float:
  """Among the correctly classified examples (the ones attacks run on), the fraction whose
  input gradient of the DLR loss is exactly zero; 0 if none is correct.

  On a misclassified example the DLR loss can be locally constant (it is exactly 1 wherever
  the true class ranks third), so those say nothing about the model.
  """
  logits, vjp = jax.vjp(logits_fn, x)
  correct = jnp.argmax(logits, -1) == y
  grad = vjp(jax.grad(lambda z: jnp.sum(objectives.dlr(z, y)))(logits))[0]
  zero = geometry.dual_norm(grad, "linf") == 0
  return float(jnp.sum(zero & correct) / jnp.maximum(jnp.sum(correct), 1))


def check_zero_gradients(logits_fn, x, y, *, max_fraction: float = 0.01) -> bool:
  """Warns if more than `max_fraction` of the correctly classified examples have an all-zero
  input gradient."""
  fraction = zero_gradient_fraction(logits_fn, x, y)
  if fraction > max_fraction:
    _warn(f"{fraction:.1%} of the correctly classified examples have an input gradient of "
          "exactly zero (DLR loss at the clean input). Gradient-based attacks cannot move from "
          "such points, so their robust accuracy is an overestimate (gradient masking: "
          "non-differentiable or quantizing layers, saturated outputs). Rely on the black-box "
          "Square attack for these points, or remove the masking before evaluating.")
    return True
  return False


def check_square(accuracy_after: dict, *, tolerance: float = 0.002) -> bool:
  """Warns if the black-box Square attack lowered robust accuracy by more than `tolerance`
  beyond the white-box attacks run before it (`accuracy_after`: name -> accuracy, in order,
  starting with "clean")."""
  names = list(accuracy_after)
  if "square" not in names:
    return False
  before = [accuracy_after[n] for n in names[:names.index("square")] if n != "clean"]
  if not before:
    return False
  drop = min(before) - accuracy_after["square"]
  if drop > tolerance:
    _warn(f"The black-box Square attack lowered robust accuracy by {drop:.2%} beyond the "
          "gradient-based attacks. A black-box attack should not beat white-box ones: the "
          "gradients are probably masked or obfuscated, and the robust accuracy may still be "
          "too high. Run Square with more queries and restarts, or design an adaptive attack.")
    return True
  return False


def box_eps(norm: str, shape) -> float:
  """The radius at which the threat model's ball covers the whole [0, 1] input box around any
  point: 1 for ℓ∞, √d for ℓ2 and d for ℓ1, with d inputs per example."""
  if norm == "linf":
    return 1.0
  size = math.prod(shape[1:])
  return float(size) if norm == "l1" else math.sqrt(size)


def check_eps_curve(eps_values, accuracies, *, norm: str, shape,
                    tolerance: float = 0.0) -> bool:
  """Warns if robust accuracy rises with ε (by more than `tolerance`), or stays above 0 at an
  ε whose ball covers the whole input box (`box_eps`). `shape` is the input batch's shape."""
  order = np.argsort(eps_values)
  eps = np.asarray(eps_values, np.float64)[order]
  acc = np.asarray(accuracies, np.float64)[order]
  flagged = False
  rises = np.flatnonzero(np.diff(acc) > tolerance)
  if rises.size:
    i = rises[0]
    _warn(f"Robust accuracy rose from {acc[i]:.2%} at eps={eps[i]:g} to {acc[i + 1]:.2%} at "
          f"eps={eps[i + 1]:g}. A larger ball contains the smaller one, so a working attack "
          "can only lower it: the attack is failing (step sizes too small, masked gradients or "
          "a bug). Do not trust these numbers; try more iterations, restarts or another loss.")
    flagged = True
  full = eps >= box_eps(norm, shape)
  if np.any(full & (acc > 0)):
    j = np.flatnonzero(full & (acc > 0))[0]
    _warn(f"Robust accuracy is {acc[j]:.2%} at eps={eps[j]:g}, where the ball covers every "
          "input in [0, 1]: any example could be changed into one of another class, so it "
          "should be 0. The attack cannot follow the model's gradients (gradient masking or a "
          "bug); the robust accuracy at small eps is not trustworthy either.")
    flagged = True
  return flagged
