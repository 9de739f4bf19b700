"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), targeted (FAB-T, as
AutoAttack's standard version runs it) and untargeted (as its "plus" version runs it), on ℓ∞,
ℓ2 and ℓ1 balls.

FAB looks for the smallest perturbation that changes the decision. Each step linearizes the
target-versus-true logit difference, projects both the current iterate and the clean point onto
that hyperplane within the [0, 1] box (minimal ℓp step), and moves to a convex combination of
the two projections, overshooting by η = 1.05 and weighting the clean point's by at most
α_max = 0.1. After a misclassified iterate it steps back towards the clean point by β = 0.9.
The standard version makes one run of 100 steps from the clean point (no random start) per
target, for the 9 classes ranked highest after the top one. A run succeeds on an example when
the smallest misclassified iterate it found lies within ε.

Untargeted FAB linearizes, at each step, the difference to the class whose linearized boundary
is nearest (|z_j − z_y| / ‖∇(z_j − z_y)‖_dual smallest), and makes 5 runs: the first from the
clean point, the others from x + (ε/2)·t/‖t‖ (t uniform in [−1, 1] for ℓ∞, Gaussian for ℓ2
and ℓ1), clipped to [0, 1].
"""
import jax
import jax.numpy as jnp

from robustwidth import validation
from robustwidth.attacks import components, geometry

ALPHA_MAX = 0.1
ETA = 1.05
BETA = 0.9
_FAR = 1e10


def _rooms(t, w):
  """Per coordinate, how far t can move against w's sign before leaving [0, 1]."""
  return jnp.where(w > 0, t, 1.0 - t)


def _solve_saturating(gap, weight, breakpoint):
  """Per row, the root λ of f(λ) = Σ_i weight_i · min(λ, breakpoint_i) = gap (weight ≥ 0),
  +inf where even f(∞) = Σ weight · breakpoint does not reach gap.

  f is increasing, concave and piecewise linear, so Newton's method from λ = 0 stays below the
  root and lands on it exactly once it reaches the root's segment: each step solves the current
  segment's line, λ ← (gap − Σ_{b_i ≤ λ} w_i b_i) / Σ_{b_i > λ} w_i, and every step that does
  not finish passes at least one breakpoint, so it ends after at most D + 1 steps (a handful in
  practice). Written by hand because sorting the breakpoints, the textbook way, is the slowest
  operation XLA:CPU has (a [1000, 784] argsort costs more than a forward pass of the model).
  """
  finite = jnp.isfinite(breakpoint)
  saturating = jnp.where(finite, weight * breakpoint, 0.0)
  unbounded = jnp.any(~finite & (weight > 0), axis=1)
  reachable = unbounded | (jnp.sum(saturating, axis=1) > gap)

  def newton(lam):
    saturated = breakpoint <= lam[:, None]
    below = jnp.sum(jnp.where(saturated, saturating, 0.0), axis=1)
    slope = jnp.sum(jnp.where(saturated, 0.0, weight), axis=1)
    step = jnp.maximum(lam, (gap - below) / jnp.maximum(slope, 1e-30))
    return jnp.where(reachable, step, 0.0)   # unreachable rows (and NaN gaps) stay put

  def changing(carry):
    count, lam, previous = carry
    return (count <= breakpoint.shape[1]) & jnp.any(lam != previous)

  first = newton(jnp.zeros_like(gap))
  _, lam, _ = jax.lax.while_loop(changing, lambda c: (c[0] + 1, newton(c[1]), c[1]),
                                 (1, newton(first), first))
  return jnp.where(reachable, lam, jnp.inf)


def project_linf(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """Minimal-ℓ∞ step d with w·(t + d) = b and t + d ∈ [0, 1] (rows of [N, D] arrays).

  Moving every coordinate by up to λ against w lowers w·t by D(λ) = Σ |w_i| min(λ, room_i), a
  concave piecewise-linear function with breakpoints at the rooms: solve D(λ) = |w·t − b|.
  When even the box's far corner does not reach the hyperplane, the step goes to that corner.
  """
  gap = jnp.sum(w * t, axis=1) - b
  w = jnp.where((gap >= 0)[:, None], w, -w)              # now the step must lower w·t by |gap|
  room = _rooms(t, w)
  lam = _solve_saturating(jnp.abs(gap), jnp.abs(w), room)
  return -jnp.sign(w) * jnp.minimum(lam[:, None], room)


def project_l2(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """Minimal-ℓ2 step d with w·(t + d) = b and t + d ∈ [0, 1] (rows of [N, D] arrays).

  The step is d = −min(α, r_i)·w_i, r_i = room_i / |w_i| the α at which coordinate i reaches
  the box; f(α) = Σ w_i² min(α, r_i) is piecewise linear with breakpoints r_i: solve
  f(α) = |w·t − b|. Coordinates with |w_i| ≤ 1e-8 do not move, as in the reference.
  """
  gap = jnp.sum(w * t, axis=1) - b
  w = jnp.where((gap >= 0)[:, None], w, -w)
  live = jnp.abs(w) > 1e-8
  w = jnp.where(live, w, 0.0)
  ratio = jnp.where(live, _rooms(t, w) / jnp.where(live, jnp.abs(w), 1.0), jnp.inf)
  alpha = _solve_saturating(jnp.abs(gap), w * w, ratio)
  return -jnp.minimum(alpha[:, None], ratio) * w


def project_l1(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """Minimal-ℓ1 step d with w·(t + d) = b and t + d ∈ [0, 1] (rows of [N, D] arrays).

  Moving coordinate i by one unit against w's sign changes w·t by |w_i|, so the cheapest step
  moves the coordinates in decreasing order of |w_i|, each to the box's face, until the
  hyperplane is reached (the last one partly); the far corner where it cannot be reached.
  Coordinates with |w_i| ≤ 1e-8 do not move, as in the reference.
  """
  gap = jnp.sum(w * t, axis=1) - b
  w = jnp.where((gap >= 0)[:, None], w, -w)
  gap = jnp.abs(gap)
  w = jnp.where(jnp.abs(w) > 1e-8, w, 0.0)
  order = jnp.argsort(-jnp.abs(w), axis=1)
  weight_s = jnp.abs(jnp.take_along_axis(w, order, axis=1))
  room_s = jnp.take_along_axis(_rooms(t, w), order, axis=1)
  reach = jnp.cumsum(weight_s * room_s, axis=1)           # w·t lowered by the first k moves
  full = reach < gap[:, None]                             # moved all the way to the face
  before = reach - weight_s * room_s
  partial = (gap[:, None] - before) / jnp.maximum(weight_s, 1e-30)
  first_partial = full.sum(axis=1, keepdims=True) == jnp.arange(t.shape[1])[None]
  move_s = jnp.where(full, room_s, jnp.where(first_partial, jnp.minimum(partial, room_s), 0.0))
  move = jnp.zeros_like(move_s).at[jnp.arange(t.shape[0])[:, None], order].set(move_s)
  return -jnp.sign(w) * move


_PROJECTIONS = {"linf": project_linf, "l2": project_l2, "l1": project_l1}


def _nearest_boundary(logits_fn, x1, y, norm):
  """(z_j − z_y, ∇(z_j − z_y)) for each row's class j ≠ y whose linearized boundary is
  nearest in the threat norm: K backward passes at once."""
  logits, pullback = jax.vjp(logits_fn, x1)
  num_classes = logits.shape[1]
  basis = jnp.broadcast_to(jnp.eye(num_classes, dtype=logits.dtype)[:, None],
                           (num_classes,) + logits.shape)
  grads = jax.vmap(lambda e: pullback(e)[0])(basis)            # [K, B, ...]
  grads = jnp.moveaxis(grads, 0, 1)                            # [B, K, ...]
  index = jnp.arange(x1.shape[0])
  df = logits - logits[index, y][:, None]
  dg = grads - grads[index, y][:, None]
  dual = jax.vmap(lambda g: geometry.dual_norm(g, norm), in_axes=1, out_axes=1)(dg)
  dist = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), jnp.inf,
                   jnp.abs(df) / (1e-12 + dual))
  nearest = jnp.argmin(dist, axis=1)
  return df[index, nearest], dg[index, nearest]


def fab_start(keys: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
  """The random start of FAB's later restarts: x + (ε/2)·t/‖t‖, clipped to [0, 1]."""
  draw = jax.random.uniform if norm == "linf" else jax.random.normal
  args = (-1.0, 1.0) if norm == "linf" else ()
  t = jax.vmap(lambda k: draw(k, x.shape[1:], x.dtype, *args))(keys)
  return jnp.clip(x + 0.5 * eps * t / components.rows(geometry.norm(t, norm), t), 0.0, 1.0)


def fab_run(logits_fn, x, y, target, *, norm: str, num_steps: int, start=None,
            alpha_max: float = ALPHA_MAX, eta: float = ETA, beta: float = BETA):
  """One FAB run, targeted at `target` ([B] classes) or untargeted (target None), from
  `start` (default: the clean point): (x_min, size), the smallest misclassified iterate found
  and ‖x_min − x‖ (1e10, and x_min = x, where none was found)."""
  project = _PROJECTIONS[norm]
  batch = x.shape[0]
  flat = lambda v: v.reshape(batch, -1)
  index = jnp.arange(batch)

  def difference(z):
    """Σ (z_t − z_y): its gradient holds every row's own gradient."""
    logits = logits_fn(z)
    per_example = logits[index, target] - logits[index, y]
    return jnp.sum(per_example), per_example

  def linearize(x1):
    if target is None:
      return _nearest_boundary(logits_fn, x1, y, norm)
    (_, df), grad = jax.value_and_grad(difference, has_aux=True)(x1)
    return df, grad

  def body(_, carry):
    x1, x_min, size = carry
    df, grad = linearize(x1)
    w = flat(grad)
    b = jnp.sum(w * flat(x1), axis=1) - df          # the linearized boundary: w·z = b
    d = project(jnp.concatenate([flat(x1), flat(x)]), jnp.concatenate([w, w]),
                jnp.concatenate([b, b]))
    d_iterate, d_clean = d[:batch].reshape(x.shape), d[batch:].reshape(x.shape)
    a_iterate = jnp.maximum(geometry.norm(d_iterate, norm), 1e-8)
    a_clean = jnp.maximum(geometry.norm(d_clean, norm), 1e-8)
    alpha = components.rows(jnp.clip(a_iterate / (a_iterate + a_clean), 0.0, alpha_max), x)
    x1 = jnp.clip((x1 + eta * d_iterate) * (1 - alpha) + (x + eta * d_clean) * alpha, 0.0, 1.0)
    wrong = components.misclassified(logits_fn, x1, y)
    dist = geometry.norm(x1 - x, norm)
    better = wrong & (dist < size)
    x_min = jnp.where(components.rows(better, x), x1, x_min)
    size = jnp.where(better, dist, size)
    x1 = jnp.where(components.rows(wrong, x), x + (x1 - x) * beta, x1)
    return x1, x_min, size

  start = x if start is None else start
  _, x_min, size = jax.lax.fori_loop(  # rolled: see "Loop form" in apgd.py
      0, num_steps, body, (start, x, jnp.full((batch,), _FAR, x.dtype)))
  return x_min, size


def fab_batch(logits_fn, x, y, keys, eps, *, norm: str = "linf", num_steps: int = 100,
              restarts: int = 5) -> jax.Array:
  """`fab` with one PRNG key per example; unchecked, for jit."""

  def run_one(r):
    start = jnp.where(r == 0, x, fab_start(jax.vmap(lambda k: jax.random.fold_in(k, r))(keys),
                                           x, eps, norm))
    x_min, size = fab_run(logits_fn, x, y, None, norm=norm, num_steps=num_steps, start=start)
    return x_min, (size <= eps) & components.misclassified(logits_fn, x_min, y)

  return components.keep_first_success(logits_fn, x, y, restarts, run_one)


def fab_targeted_batch(logits_fn, x, y, eps, *, norm: str = "linf", num_steps: int = 100,
                       num_targets: int = 9) -> jax.Array:
  """`fab_targeted` without argument checks, for jit."""
  ranked = components.ranked_classes(logits_fn, x)

  def run_one(t):
    x_min, size = fab_run(logits_fn, x, y, jnp.take(ranked, t + 1, axis=1), norm=norm,
                          num_steps=num_steps)
    return x_min, (size <= eps) & components.misclassified(logits_fn, x_min, y)

  return components.keep_first_success(logits_fn, x, y, num_targets, run_one)


_fab_jit = jax.jit(fab_batch, static_argnames=("norm", "num_steps", "restarts"))
_fab_targeted_jit = jax.jit(fab_targeted_batch, static_argnames=("norm", "num_steps",
                                                                "num_targets"))


def fab_targeted(logits_fn: components.LogitsFn, x, y, *, eps, norm: str = "linf",
                 num_steps: int = 100, num_targets: int = 9) -> jax.Array:
  """FAB-T as in AutoAttack's standard version; returns x_adv.

  x_adv[i] is the smallest adversarial example found for example i if it lies within eps
  (searching the targets in order and keeping the first that succeeds), x_i otherwise.
  Deterministic: the standard version has no random start.
  """
  validation.check_positive_int("num_steps", num_steps)
  components.check_num_targets(num_targets, components.check_args(logits_fn, x, y, eps, norm))
  return jax.lax.stop_gradient(
      _fab_targeted_jit(components.as_partial(logits_fn), x, y, eps, norm=norm,
                        num_steps=num_steps, num_targets=num_targets))


def fab(logits_fn: components.LogitsFn, x, y, *, key, eps, norm: str = "linf",
        num_steps: int = 100, restarts: int = 5) -> jax.Array:
  """Untargeted FAB as in AutoAttack's "plus" version; returns x_adv (as `fab_targeted`).

  The first run starts from the clean point, the others from random points (module doc).
  """
  validation.check_positive_int("num_steps", num_steps)
  validation.check_positive_int("restarts", restarts)
  components.check_args(logits_fn, x, y, eps, norm)
  keys = jax.random.split(key, x.shape[0])
  return jax.lax.stop_gradient(
      _fab_jit(components.as_partial(logits_fn), x, y, keys, eps, norm=norm,
               num_steps=num_steps, restarts=restarts))
