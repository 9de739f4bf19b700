"""The threat model's geometry: norms, projection onto B(x, ε) ∩ [0, 1], steepest-ascent
directions and random starts, for ℓ∞ and ℓ2 balls."""
import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
_TINY = 1e-12


def _flat(v):
  return v.reshape(v.shape[0], -1)


def _per_example(s, like):
  """Broadcasts a [B] vector against a [B, ...] batch."""
  return s.reshape((-1,) + (1,) * (like.ndim - 1))


def norm(v: jax.Array, norm: str) -> jax.Array:
  """Per-example ‖v‖ in the threat model's norm: [B]."""
  if norm == "linf":
    return jnp.max(jnp.abs(_flat(v)), axis=-1)
  return jnp.sqrt(jnp.sum(_flat(v) ** 2, axis=-1))


def dual_norm(v: jax.Array, norm: str) -> jax.Array:
  """Per-example dual norm (ℓ1 for ℓ∞, ℓ2 for ℓ2): the Lipschitz constant's norm for a
  gradient. max over ‖δ‖ ≤ ε of ⟨g, δ⟩ is ε · dual_norm(g)."""
  if norm == "linf":
    return jnp.sum(jnp.abs(_flat(v)), axis=-1)
  return jnp.sqrt(jnp.sum(_flat(v) ** 2, axis=-1))


def project(x_adv: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """Nearest point of B(x, ε) to x_adv, then clipped to [0, 1].

  Clipping after the ball projection stays inside the ball, since x itself is in [0, 1].
  """
  delta = x_adv - x
  if norm == "linf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    length = jnp.sqrt(jnp.sum(_flat(delta) ** 2, axis=-1))
    delta = delta * _per_example(jnp.minimum(1.0, eps / jnp.maximum(length, _TINY)), delta)
  return jnp.clip(x + delta, 0.0, 1.0)


def ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
  """Unit-norm steepest-ascent direction: sign(g) for ℓ∞, g / ‖g‖₂ for ℓ2."""
  if norm == "linf":
    return jnp.sign(grad)
  length = jnp.sqrt(jnp.sum(_flat(grad) ** 2, axis=-1))
  return grad / _per_example(jnp.maximum(length, _TINY), grad)


INITS = ("uniform", "normal", "none")


def random_start(key: jax.Array, x: jax.Array, eps, norm: str, init: str) -> jax.Array:
  """The attack's starting point, not projected: PGD takes its first gradient here, as the
  TRADES and Madry references do, and projects onto B(x, ε) ∩ [0, 1] only after each step.

  uniform: ℓ∞: x + U(−ε, ε) per coordinate; ℓ2: a uniformly random direction with a radius
  of ε·U(0, 1). normal: x + 0.001·N(0, 1) (the TRADES start). none: x. Pixels of a saturated
  image can start outside [0, 1]; `project` the start for a point inside the threat model.
  """
  if init == "none":
    return x
  if init == "normal":
    return x + 0.001 * jax.random.normal(key, x.shape, x.dtype)
  if norm == "linf":
    return x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  direction_key, radius_key = jax.random.split(key)
  direction = ascent_direction(jax.random.normal(direction_key, x.shape, x.dtype), "l2")
  radius = jax.random.uniform(radius_key, (x.shape[0],), x.dtype) * eps
  return x + direction * _per_example(radius, x)
