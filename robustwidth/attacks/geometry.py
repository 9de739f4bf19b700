"""The threat model's geometry: norms, projection onto B(x, ε) ∩ [0, 1], steepest-ascent
directions and random starts, for ℓ∞, ℓ2 and ℓ1 balls."""
import math

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2", "l1")
_TINY = 1e-12
# ℓ1 PGD steps along the signs of the top 1% of the movable gradient coordinates (SLIDE,
# Tramèr & Boneh 2019, at its 99th percentile).
L1_STEP_FRACTION = 0.01


def _flat(v):
  return v.reshape(v.shape[0], -1)


def _per_example(s, like):
  """Broadcasts a [B] vector against a [B, ...] batch."""
  return s.reshape((-1,) + (1,) * (like.ndim - 1))


def norm(v: jax.Array, norm: str) -> jax.Array:
  """Per-example ‖v‖ in the threat model's norm: [B]."""
  if norm == "linf":
    return jnp.max(jnp.abs(_flat(v)), axis=-1)
  if norm == "l1":
    return jnp.sum(jnp.abs(_flat(v)), axis=-1)
  return jnp.sqrt(jnp.sum(_flat(v) ** 2, axis=-1))


def dual_norm(v: jax.Array, norm: str) -> jax.Array:
  """Per-example dual norm (ℓ1 for ℓ∞, ℓ2 for ℓ2, ℓ∞ for ℓ1): the Lipschitz constant's norm
  for a gradient. max over ‖δ‖ ≤ ε of ⟨g, δ⟩ is ε · dual_norm(g)."""
  if norm == "linf":
    return jnp.sum(jnp.abs(_flat(v)), axis=-1)
  if norm == "l1":
    return jnp.max(jnp.abs(_flat(v)), axis=-1)
  return jnp.sqrt(jnp.sum(_flat(v) ** 2, axis=-1))


def l1_box_threshold(magnitude: jax.Array, room: jax.Array, eps) -> jax.Array:
  """[B] the λ ≥ 0 with Σ_i min(max(a_i − λ, 0), u_i) = ε (0 where λ = 0 already fits), for
  rows a = `magnitude` ≥ 0 and u = `room` ≥ 0 of [B, D] arrays.

  The sum is piecewise linear and decreasing in λ, with breakpoints at a_i − u_i (coordinate i
  stops being capped by its room) and a_i (it reaches 0): sort the 2D breakpoints, evaluate
  the sum at each from its slopes, and solve on the segment where it crosses ε.
  """
  points = jnp.concatenate([jnp.maximum(magnitude - room, 0.0), magnitude], axis=1)
  change = jnp.concatenate([jnp.ones_like(magnitude), -jnp.ones_like(magnitude)], axis=1)
  order = jnp.argsort(points, axis=1)
  points = jnp.take_along_axis(points, order, axis=1)
  slope = jnp.cumsum(jnp.take_along_axis(change, order, axis=1), axis=1)  # on (p_k, p_k+1)
  start = jnp.sum(jnp.minimum(magnitude, room), axis=1, keepdims=True)
  steps = jnp.diff(points, axis=1, prepend=jnp.zeros_like(points[:, :1]))
  previous_slope = jnp.concatenate([jnp.zeros_like(slope[:, :1]), slope[:, :-1]], axis=1)
  value = start - jnp.cumsum(previous_slope * steps, axis=1)   # the sum at each breakpoint
  eps = jnp.broadcast_to(jnp.asarray(eps, value.dtype), value.shape[:1])[:, None]
  k = jnp.sum(value > eps, axis=1, keepdims=True) - 1          # last breakpoint above ε
  kk = jnp.maximum(k, 0)
  lam = (jnp.take_along_axis(points, kk, 1) + (jnp.take_along_axis(value, kk, 1) - eps) /
         jnp.maximum(jnp.take_along_axis(slope, kk, 1), 1.0))
  return jnp.where((start[:, 0] <= eps[:, 0]) | (k[:, 0] < 0), 0.0, lam[:, 0])


def project_l1(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """The nearest point of B₁(x, ε) ∩ [0, 1] to x_adv (the exact Euclidean projection).

  Coordinate-wise it soft-thresholds the perturbation by one λ ≥ 0 and clips it to the box:
  δ_i = sign(y_i) · min(max(|y_i| − λ, 0), u_i), y = x_adv − x and u_i the room from x_i to the
  box's face on y_i's side; λ is the smallest value giving ‖δ‖₁ ≤ ε (`l1_box_threshold`).
  """
  y = _flat(x_adv - x)
  flat_x = _flat(x)
  room = jnp.maximum(jnp.where(y > 0, 1.0 - flat_x, flat_x), 0.0)
  magnitude = jnp.abs(y)
  lam = l1_box_threshold(magnitude, room, eps)
  delta = jnp.sign(y) * jnp.minimum(jnp.maximum(magnitude - lam[:, None], 0.0), room)
  return jnp.clip(x + delta.reshape(x.shape), 0.0, 1.0)


def project(x_adv: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """Nearest point of B(x, ε) to x_adv, then clipped to [0, 1]; for ℓ1 the nearest point of
  B₁(x, ε) ∩ [0, 1] itself (`project_l1`).

  Clipping after the ball projection stays inside the ball, since x itself is in [0, 1].
  """
  if norm == "l1":
    return project_l1(x_adv, x, eps)
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    length = jnp.sqrt(jnp.sum(_flat(delta) ** 2, axis=-1))
    delta = delta * _per_example(jnp.minimum(1.0, eps / jnp.maximum(length, _TINY)), delta)
  return jnp.clip(x + delta, 0.0, 1.0)


def sparse_sign(grad: jax.Array, count: jax.Array) -> jax.Array:
  """sign(g) on each example's `count` ([B]) coordinates of largest |g| (ties at the
  threshold included), zero elsewhere, scaled to unit ℓ1 norm: the sparse ℓ1 ascent step."""
  magnitude = jnp.abs(_flat(grad))
  ranked = jnp.sort(magnitude, axis=1)
  index = jnp.clip(magnitude.shape[1] - count, 0, magnitude.shape[1] - 1).astype(jnp.int32)
  threshold = jnp.take_along_axis(ranked, index[:, None], axis=1)
  signs = jnp.sign(_flat(grad)) * (magnitude >= threshold)
  signs = signs / (jnp.sum(jnp.abs(signs), axis=1, keepdims=True) + 1e-10)
  return signs.reshape(grad.shape)


def ascent_direction(grad: jax.Array, norm: str, point: jax.Array | None = None) -> jax.Array:
  """Unit-norm steepest-ascent direction: sign(g) for ℓ∞, g / ‖g‖₂ for ℓ2.

  ℓ1 (whose exact steepest ascent moves one coordinate and stalls on the box): the signs of
  the top `L1_STEP_FRACTION` of the coordinates by |g| (at least one), among those of `point`
  (the current iterate, if given) that can still move in g's direction inside [0, 1].
  """
  if norm == "linf":
    return jnp.sign(grad)
  if norm == "l1":
    if point is not None:
      grad = jnp.where(jnp.where(grad > 0, point < 1.0, point > 0.0), grad, 0.0)
    size = math.prod(grad.shape[1:])
    count = jnp.full((grad.shape[0],), max(1, round(L1_STEP_FRACTION * size)))
    return sparse_sign(grad, count)
  length = jnp.sqrt(jnp.sum(_flat(grad) ** 2, axis=-1))
  return grad / _per_example(jnp.maximum(length, _TINY), grad)


INITS = ("uniform", "normal", "none")


def random_start(key: jax.Array, x: jax.Array, eps, norm: str, init: str) -> jax.Array:
  """The attack's starting point, not projected: PGD takes its first gradient here, as the
  TRADES and Madry references do, and projects onto B(x, ε) ∩ [0, 1] only after each step.

  uniform: ℓ∞: x + U(−ε, ε) per coordinate; ℓ2 (ℓ1): a uniformly random direction on the
  unit sphere (Gaussian, for ℓ1 Laplace, draws normalized) with a radius of ε·U(0, 1).
  normal: x + 0.001·N(0, 1) (the TRADES start). none: x. Pixels of a saturated image can
  start outside [0, 1]; `project` the start for a point inside the threat model.
  """
  if init == "none":
    return x
  if init == "normal":
    return x + 0.001 * jax.random.normal(key, x.shape, x.dtype)
  if norm == "linf":
    return x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  direction_key, radius_key = jax.random.split(key)
  if norm == "l1":
    direction = jax.random.laplace(direction_key, x.shape, x.dtype)
    length = jnp.sum(jnp.abs(_flat(direction)), axis=-1)
    direction = direction / _per_example(jnp.maximum(length, _TINY), x)
  else:
    direction = ascent_direction(jax.random.normal(direction_key, x.shape, x.dtype), "l2")
  radius = jax.random.uniform(radius_key, (x.shape[0],), x.dtype) * eps
  return x + direction * _per_example(radius, x)
