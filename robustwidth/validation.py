"""Argument checks shared by the public functions; each error names the problem and the fix.

Value checks (pixel range, label range) need concrete arrays, so they run when a public
function is called eagerly and are skipped while it is traced under `jax.jit`; the data
pipelines check their arrays once when they load them.
"""
import jax
import numpy as np


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_images(x, name: str = "x") -> None:
  if x.ndim < 2:
    raise ValueError(f"{name} must be a batch [B, ...], got shape {x.shape}.")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}; "
                     "divide uint8 images by 255.")
  if is_concrete(x):
    # np.asarray first: a jax array's own min() would be staged when called under jit.
    values = np.asarray(x)
    lo, hi = float(values.min()), float(values.max())
    if not (lo >= 0.0 and hi <= 1.0):  # NaN fails both comparisons.
      raise ValueError(f"{name} must lie in [0, 1] (got values in [{lo:.4g}, {hi:.4g}]); "
                       "scale images to [0, 1] and put any mean/std normalization inside "
                       "the model.")


def check_labels(y, batch_size: int, num_classes: int, name: str = "y") -> None:
  if y.shape != (batch_size,):
    raise ValueError(f"{name} must have shape ({batch_size},) to match the batch, "
                     f"got {y.shape}.")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}.")
  if is_concrete(y) and y.size:
    values = np.asarray(y)
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
      raise ValueError(f"{name} must lie in [0, {num_classes - 1}] for a model with "
                       f"{num_classes} classes, got labels in [{lo}, {hi}].")


def check_logits(logits_shape, batch_size: int) -> None:
  if len(logits_shape) != 2 or logits_shape[0] != batch_size:
    raise ValueError(f"logits_fn must return logits of shape [B, K] = [{batch_size}, K], "
                     f"got {tuple(logits_shape)}.")


def check_finite_logits(logits, name: str = "logits") -> None:
  """Refuses NaN or infinite logits: argmax would read them as class 0 and report a result."""
  if is_concrete(logits):
    finite = np.isfinite(np.asarray(logits)).all(axis=-1)
    if not finite.all():
      bad = np.flatnonzero(~finite)
      raise ValueError(f"{name} hold NaN or infinite values for {len(bad)} of {finite.size} "
                       f"examples (first: index {bad[0]}): the model has diverged or "
                       "overflows. Check its training (a lower learning rate) and its inputs; "
                       "no accuracy can be computed from these logits.")


def check_choice(name: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"Unknown {name} {value!r}; use one of {tuple(allowed)}.")


def check_nonnegative(name: str, value) -> None:
  if is_concrete(value) and not float(np.asarray(value)) >= 0:
    raise ValueError(f"{name} must be >= 0, got {value}.")


def check_positive_int(name: str, value) -> None:
  if not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
