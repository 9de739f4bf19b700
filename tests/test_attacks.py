"""PGD against closed forms and invariants.

No test here may depend on rounding: under ℓ∞ a gradient coordinate near zero turns rounding
noise (which differs between batch shapes, jit and eager, and CPUs' kernels) into a whole
signed step, and the KL loss is stationary at its target. Comparisons of two computations of
one attack use ℓ2 steps (continuous in the gradient) from non-stationary starts; closed forms
keep every example away from a decision boundary.
"""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from robustwidth import attacks, models
from robustwidth.attacks import geometry
from tests import helpers

KEY = jax.random.key(0)


def _two_class_linear(seed=0, dim=12):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(dim, 2)).astype(np.float32)
  b = rng.normal(size=2).astype(np.float32) * 0.1
  return w, b


def _interior_points(seed, batch, dim, eps):
  """Points at least eps from the faces of [0, 1], so the box constraint is inactive."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(eps + 0.05, 1 - eps - 0.05, size=(batch, dim)), jnp.float32)


def test_unroll_traces_each_step_and_leaves_the_attack_unchanged():
  # XLA's cost analysis counts a rolled loop's body once, so FLOP counts pass unroll=True.
  eps, dim = 0.1, 12
  w, b = _two_class_linear(dim=dim)
  x = _interior_points(3, 8, dim, eps)
  y = jnp.zeros((8,), jnp.int32)
  attack = lambda unroll: lambda x: attacks.pgd(
      helpers.linear_logits_fn(w, b), x, y, key=KEY, eps=eps, step_size=0.02, num_steps=4,
      norm="l2", unroll=unroll)
  rolled, unrolled = (jax.jit(attack(u)).lower(x).as_text() for u in (False, True))
  # One loop fewer, the step loop (the rest of the attack traces loops of its own).
  assert rolled.count("stablehlo.while") == unrolled.count("stablehlo.while") + 1
  np.testing.assert_allclose(attack(True)(x), attack(False)(x), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_linear_model_reaches_the_exact_worst_case(norm, loss):
  # For two classes, every loss here increases along d = w_other − w_y, so the worst case in
  # the ball is x + ε·sign(d) (ℓ∞) or x + ε·d/‖d‖₂ (ℓ2), whatever the loss. ℓ∞ sign steps
  # of size ε reach that vertex exactly from any start; in ℓ2 a random start only decays
  # geometrically under projection, so the ℓ2 attack starts at x.
  eps, dim = 0.1, 12
  w, b = _two_class_linear(dim=dim)
  x = _interior_points(1, 64, dim, eps)
  y = jnp.asarray(np.random.default_rng(2).integers(0, 2, size=64))
  logits_fn = helpers.linear_logits_fn(w, b)
  d = (w[:, 1] - w[:, 0])[None, :] * jnp.where(y == 0, 1.0, -1.0)[:, None]
  if norm == "linf":
    expected = x + eps * jnp.sign(d)
  else:
    expected = x + eps * d / jnp.linalg.norm(d, axis=1, keepdims=True)
  x_adv = attacks.pgd(logits_fn, x, y, key=KEY, eps=eps, step_size=eps, num_steps=3,
                      norm=norm, loss=loss, init="uniform" if norm == "linf" else "none")
  np.testing.assert_allclose(x_adv, expected, atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_robust_accuracy_matches_closed_form(norm):
  # Robust iff the margin z_y − z_other exceeds ε · ‖w_y − w_other‖_dual.
  dim = 12
  w, b = _two_class_linear(seed=3, dim=dim)
  x = _interior_points(4, 256, dim, 0.25)  # The box stays inactive for any ε <= 0.25.
  logits_fn = helpers.linear_logits_fn(w, b)
  y = jnp.argmax(logits_fn(x), -1)
  y = jnp.where(jnp.arange(256) % 5 == 0, 1 - y, y)  # Some examples misclassified already.
  z = np.asarray(logits_fn(x))
  margin = z[np.arange(256), y] - z[np.arange(256), 1 - y]
  dual_norm = np.linalg.norm(w[:, 0] - w[:, 1], ord={"linf": 1, "l2": 2}[norm])
  # ε at the middle of the widest gap between the central margins: no example ends within
  # rounding of the boundary (an ε at one example's margin left its outcome to rounding).
  central = np.sort(margin[margin > 0])
  central = central[len(central) // 4:3 * len(central) // 4]
  widest = int(np.argmax(np.diff(central)))
  eps = min(0.25, float(central[widest] + central[widest + 1]) / 2 / dual_norm)
  expected = np.mean(margin > eps * dual_norm)
  assert 0.2 < expected < 0.8  # The test must separate robust from non-robust points.
  x_adv = attacks.pgd(logits_fn, x, y, key=KEY, eps=eps, step_size=eps / 4, num_steps=10,
                      norm=norm, loss="ce")
  robust = np.mean(np.argmax(logits_fn(x_adv), -1) == np.asarray(y))
  assert robust == pytest.approx(expected)


def test_gradient_max_is_the_largest_statistic_of_the_gradients_pgd_took():
  # ∇ₓ CE of a two-class linear model is σ(z_other − z_y)·(w_other − w_y): the largest ℓ2
  # norm over the attack's gradients is that at its most confident visited point. With init
  # "none" and ℓ2 steps along the fixed direction d the iterates are x + k·s·d/‖d‖ (no box or
  # ball binds), so the gradients are at k = 0 .. num_steps − 1, per example.
  eps, dim, steps, size = 0.1, 12, 4, 0.02
  w, b = _two_class_linear(seed=5, dim=dim)
  x = _interior_points(6, 32, dim, eps)
  y = jnp.zeros(32, jnp.int32)
  x_adv, largest = attacks.pgd_with_gradient_max(
      helpers.linear_logits_fn(w, b), x, y, lambda g: geometry.norm(g, "l2"), key=KEY,
      eps=eps, step_size=size, num_steps=steps, norm="l2", init="none")
  d = np.asarray(w[:, 1] - w[:, 0], np.float64)
  points = np.asarray(x, np.float64)[None] + (np.arange(steps) * size)[:, None, None] * (
      d / np.linalg.norm(d))
  gap = points @ d + (b[1] - b[0])
  expected = np.max(1 / (1 + np.exp(-gap)), axis=0) * np.linalg.norm(d)
  np.testing.assert_allclose(largest, expected, rtol=1e-5)
  np.testing.assert_allclose(x_adv, points[-1] + size * d / np.linalg.norm(d), atol=1e-5)
  assert np.ptp(expected) > 0.01 * expected.mean()  # Per example, not one batch-wide value.


@pytest.fixture(scope="module")
def wrn():
  x = helpers.images(0, 16)
  return helpers.with_trained_batch_norm(helpers.tiny_wrn(), x)


@pytest.mark.parametrize("norm,loss,init", [
    (n, l, i) for n, l, i in itertools.product(attacks.NORMS, attacks.LOSSES, attacks.INITS)])
def test_adversarial_examples_stay_in_the_ball_and_the_box(norm, loss, init):
  x, y = helpers.images(1, 16), helpers.labels(1, 16)
  eps = {"linf": 0.3, "l2": 1.0, "l1": 4.0}[norm]  # Large enough that the box binds.
  x_adv = attacks.pgd(models.model_logits_fn(helpers.tiny_mlp()), x, y, key=KEY, eps=eps,
                      step_size=eps / 2, num_steps=3, norm=norm, loss=loss, init=init,
                      restarts=2)
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  delta = (x_adv - x).reshape(16, -1)
  size = jnp.linalg.norm(delta, ord={"linf": jnp.inf, "l2": 2, "l1": 1}[norm], axis=-1)
  assert float(size.max()) <= eps * (1 + 1e-5)
  if not (loss == "kl" and init == "none"):  # There the start is stationary: no direction.
    assert float(size.max()) > eps / 4  # It moved.


@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_first_gradient_is_taken_at_the_unclipped_start(init):
  # Every pixel is 1 and, with label 0, the loss CE = softplus(−Σ (z − 1)²) has ∂/∂z_i of
  # sign(1 − z_i): 0 at z_i = 1, −1 above it, +1 below. As in the references, the start
  # 1 + u is not clipped, so one step of 2ε sends a pixel with u > 0 down to the ball's face
  # 1 − ε and one with u < 0 up to the box's face 1. About half the pixels have u > 0. Had
  # the start been clipped to [0, 1] first, every pixel would stay at 1.
  eps = 0.031

  def logits_fn(z):
    score = -jnp.sum((z.reshape(z.shape[0], -1) - 1.0) ** 2, axis=-1)
    return jnp.stack([jnp.zeros_like(score), score], axis=-1)

  x = jnp.ones((4, 8, 8, 1))
  x_adv = attacks.pgd(logits_fn, x, jnp.zeros(4, jnp.int32), key=KEY, eps=eps,
                      step_size=2 * eps, num_steps=1, init=init)
  lowered = np.isclose(np.asarray(x_adv), 1 - eps, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(lowered | (np.asarray(x_adv) == 1.0), True)
  assert 0.35 < lowered.mean() < 0.65


def test_attack_leaves_batch_norm_statistics_unchanged(wrn):
  before = jax.tree.map(np.asarray, nnx.state(wrn, nnx.BatchStat))
  logits_fn = models.model_logits_fn(wrn)
  x, y = helpers.images(2, 16), helpers.labels(2, 16)
  attacks.pgd(logits_fn, x, y, key=KEY, eps=0.1, step_size=0.05, num_steps=2)
  after = jax.tree.map(np.asarray, nnx.state(wrn, nnx.BatchStat))
  chex.assert_trees_all_equal(before, after)
  # logits_fn is the evaluation-mode model: BatchNorm reads the running statistics.
  np.testing.assert_allclose(logits_fn(x), wrn(x, train=False), atol=1e-6)


def _gradient_norm(grad):
  return geometry.norm(grad, "l2")


@pytest.mark.parametrize("loss", ["ce", "margin", "dlr"])
def test_attacking_a_batch_equals_attacking_each_example_alone(wrn, loss):
  # From x itself (init "none": the same start alone and in the batch), with ℓ2 steps.
  logits_fn = models.model_logits_fn(wrn)
  x, y = helpers.images(3, 6), helpers.labels(3, 6)
  settings = dict(key=KEY, eps=0.5, step_size=0.15, num_steps=3, norm="l2", loss=loss,
                  init="none")
  batch_adv, batch_probe = attacks.pgd_with_gradient_max(logits_fn, x, y, _gradient_norm,
                                                         **settings)
  assert float(jnp.min(jnp.linalg.norm((batch_adv - x).reshape(6, -1), axis=1))) > 0.1
  for i in range(6):
    alone_adv, alone_probe = attacks.pgd_with_gradient_max(
        logits_fn, x[i:i + 1], y[i:i + 1], _gradient_norm, **settings)
    np.testing.assert_allclose(batch_adv[i:i + 1], alone_adv, atol=1e-4)
    np.testing.assert_allclose(batch_probe[i:i + 1], alone_probe, rtol=1e-4)


def test_an_examples_kl_attack_does_not_depend_on_the_rest_of_its_batch(wrn):
  # KL is stationary at x, so the attack starts at a random point, drawn for the batch's
  # shape: each example is attacked in batches of one shape whose other rows differ.
  logits_fn = models.model_logits_fn(wrn)
  x, others = helpers.images(3, 6), helpers.images(9, 6)
  settings = dict(key=KEY, eps=0.5, step_size=0.15, num_steps=3, norm="l2", loss="kl",
                  init="normal")
  batch_adv, batch_probe = attacks.pgd_with_gradient_max(logits_fn, x, None, _gradient_norm,
                                                         **settings)
  assert float(jnp.min(jnp.linalg.norm((batch_adv - x).reshape(6, -1), axis=1))) > 0.1
  for i in range(6):
    mixed = others.at[i].set(x[i])
    mixed_adv, mixed_probe = attacks.pgd_with_gradient_max(logits_fn, mixed, None,
                                                           _gradient_norm, **settings)
    np.testing.assert_allclose(mixed_adv[i], batch_adv[i], atol=1e-4)
    np.testing.assert_allclose(mixed_probe[i], batch_probe[i], rtol=1e-4)


def test_restarts_never_weaken_the_attack(wrn):
  logits_fn = models.model_logits_fn(wrn)
  # Labels are the model's own predictions, so every example starts correct and a small ball
  # leaves the single restart room to improve on.
  x = helpers.images(4, 64)
  y = jnp.argmax(logits_fn(x), -1)
  settings = dict(key=KEY, eps=0.01, step_size=0.004, num_steps=3, init="uniform")
  single = attacks.pgd(logits_fn, x, y, restarts=1, **settings)
  several = attacks.pgd(logits_fn, x, y, restarts=4, **settings)
  fooled_single = np.argmax(logits_fn(single), -1) != np.asarray(y)
  fooled_several = np.argmax(logits_fn(several), -1) != np.asarray(y)
  assert np.all(fooled_several[fooled_single])
  assert fooled_several.sum() > fooled_single.sum()  # This setting leaves room to improve.


def test_kl_attack_is_label_free(wrn):
  logits_fn = models.model_logits_fn(wrn)
  x = helpers.images(5, 8)
  settings = dict(key=KEY, eps=0.1, step_size=0.03, num_steps=2, loss="kl", init="normal")
  np.testing.assert_array_equal(attacks.pgd(logits_fn, x, None, **settings),
                                attacks.pgd(logits_fn, x, helpers.labels(5, 8), **settings))


def test_pgd_is_jittable_and_equals_eager(wrn):
  logits_fn = models.model_logits_fn(wrn)
  x, y = helpers.images(6, 8), helpers.labels(6, 8)
  run = lambda x, y: attacks.pgd(logits_fn, x, y, key=KEY, eps=0.5, step_size=0.15,
                                 num_steps=2, norm="l2")
  np.testing.assert_allclose(jax.jit(run)(x, y), run(x, y), atol=1e-5)


def _mlp_by_hand(model):
  """The one-hidden-layer MLP's evaluation pass written out from its weights, independent of
  `models.logits_fn`."""
  (hidden,), head = model.hidden, model.head
  assert hidden.multiplier == head.multiplier == 1.0  # The standard parameterization.
  w1, b1, w2, b2 = (jnp.asarray(v[...]) for v in (hidden.kernel, hidden.bias, head.kernel,
                                                  head.bias))
  return lambda x: jax.nn.relu(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2 + b2


def test_a_jitted_attack_takes_the_weights_as_arguments():
  # models.logits_fn is a Partial whose leaves are the weights: one trace serves two models of
  # one architecture, and each call attacks its own weights (not the first call's constants).
  x, y = helpers.images(10, 8), helpers.labels(10, 8)
  settings = dict(key=KEY, eps=0.5, step_size=0.15, num_steps=3, norm="l2", init="none")
  traces = []

  @jax.jit
  def attack(logits_fn, x, y):
    traces.append(None)  # Runs once per trace, never when the compiled attack is reused.
    return attacks.pgd(logits_fn, x, y, **settings)

  results = []
  for seed in (0, 1):
    model = helpers.tiny_mlp(seed)
    results.append(attack(models.model_logits_fn(model), x, y))
    np.testing.assert_allclose(results[-1], attacks.pgd(_mlp_by_hand(model), x, y, **settings),
                               atol=1e-5)
  assert len(traces) == 1
  assert float(jnp.max(jnp.abs(results[0] - results[1]))) > 0.05


@pytest.mark.parametrize("change,message", [
    (dict(eps=-0.1), "eps must be >= 0"),
    (dict(step_size=-1.0), "step_size must be >= 0"),
    (dict(num_steps=0), "num_steps must be an integer >= 1"),
    (dict(restarts=0), "restarts must be an integer >= 1"),
    (dict(norm="l0"), "Unknown norm 'l0'"),
    (dict(loss="hinge"), "Unknown attack loss 'hinge'"),
    (dict(init="zeros"), "Unknown init 'zeros'"),
    (dict(x=2.0 * helpers.images(7, 4)), r"x must lie in \[0, 1\]"),
    (dict(x=helpers.images(7, 4).at[2, 3, 3, 0].set(jnp.nan)), r"x must lie in \[0, 1\]"),
    (dict(x=(255 * helpers.images(7, 4)).astype(jnp.uint8)), "must be floating point"),
    (dict(y=jnp.array([0, 1, 2, 10])), r"y must lie in \[0, 9\]"),
    (dict(y=jnp.array([0, 1, 2])), r"y must have shape \(4,\)"),
    (dict(y=None), "needs labels y"),
    (dict(num_classes=2, loss="dlr"), "needs at least 3 classes"),
])
def test_bad_input_gets_a_clear_error(change, message):
  logits_fn = models.model_logits_fn(helpers.tiny_wrn(num_classes=change.pop("num_classes", 10)))
  args = dict(x=helpers.images(7, 4), y=jnp.array([0, 1, 1, 0]), key=KEY, eps=0.1,
              step_size=0.02, num_steps=2, norm="linf", loss="ce", init="uniform", restarts=1)
  args.update(change)
  x, y = args.pop("x"), args.pop("y")
  with pytest.raises(ValueError, match=message):
    attacks.pgd(logits_fn, x, y, **args)


def test_value_checks_run_on_arrays_closed_over_under_jit():
  # A concrete array captured by a jitted closure is checked at trace time, not mistaken for
  # a tracer (nor crashing on one).
  logits_fn = models.model_logits_fn(helpers.tiny_mlp())
  x, y = helpers.images(8, 4), helpers.labels(8, 4)
  settings = dict(key=KEY, eps=0.1, step_size=0.05, num_steps=1)
  assert jax.jit(lambda: attacks.pgd(logits_fn, x, y, **settings))().shape == x.shape
  outside = 2.0 * x
  with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
    jax.jit(lambda: attacks.pgd(logits_fn, outside, y, **settings))()


# ---------------------------------------------------------------- the ℓ1 ball ∩ [0, 1]

def _projection_by_quadratic_program(z, x, eps):
  """argmin ‖δ − (z − x)‖₂ over ‖δ‖₁ ≤ ε, 0 ≤ x + δ ≤ 1, by SLSQP on δ = p − q, p, q ≥ 0."""
  optimize = pytest.importorskip("scipy.optimize")
  d = len(x)
  target = z - x
  objective = lambda v: 0.5 * np.sum((v[:d] - v[d:] - target) ** 2)
  constraints = [{"type": "ineq", "fun": lambda v: eps - np.sum(v)},
                 {"type": "ineq", "fun": lambda v: 1 - x - (v[:d] - v[d:])},
                 {"type": "ineq", "fun": lambda v: x + (v[:d] - v[d:])}]
  result = optimize.minimize(objective, np.zeros(2 * d), method="SLSQP",
                             bounds=[(0, None)] * (2 * d), constraints=constraints,
                             options=dict(ftol=1e-12, maxiter=500))
  return x + result.x[:d] - result.x[d:]


def test_l1_projection_is_the_nearest_point_of_the_ball_and_the_box():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (8, 10)).astype(np.float32)
  x[:, :3] = rng.integers(0, 2, (8, 3))                  # on the box's faces
  z = x + rng.normal(0, 0.6, (8, 10)).astype(np.float32)
  z[0] = x[0] + 0.01                                      # already inside: unchanged
  eps = 0.7
  p = np.asarray(geometry.project(jnp.asarray(z), jnp.asarray(x), eps, "l1"))
  np.testing.assert_allclose(p[0], np.clip(z[0], 0, 1), atol=1e-6)
  for i in range(8):
    np.testing.assert_allclose(p[i], _projection_by_quadratic_program(z[i], x[i], eps),
                               atol=2e-5)
  assert np.all(np.abs(p - x).sum(1) <= eps * (1 + 1e-5))
  assert p.min() >= 0 and p.max() <= 1
  again = geometry.project(jnp.asarray(p), jnp.asarray(x), eps, "l1")
  np.testing.assert_allclose(again, p, atol=1e-6)         # idempotent
  # Nearest point: no feasible point (random ones, and the clean point) is closer to z.
  for i in range(1, 8):
    candidates = x[i] + rng.laplace(size=(500, 10)) * 0.1
    candidates = np.clip(candidates, 0, 1)
    feasible = candidates[np.abs(candidates - x[i]).sum(1) <= eps]
    nearest = np.linalg.norm(p[i] - z[i])
    assert nearest <= np.linalg.norm(feasible - z[i], axis=1).min() + 1e-6
    assert nearest <= np.linalg.norm(x[i] - z[i]) + 1e-6


def _l1_box_gain(v, x, eps):
  """max ⟨v, δ⟩ over ‖δ‖₁ ≤ ε, x + δ ∈ [0, 1]: spend the budget on the coordinates of
  largest |v_i|, each up to the box's face on v_i's side."""
  gain, budget = 0.0, eps
  for i in np.argsort(-np.abs(v)):
    move = min(budget, 1 - x[i] if v[i] > 0 else x[i])
    gain, budget = gain + abs(v[i]) * move, budget - move
  return gain


def test_l1_pgd_reaches_the_exact_worst_case_of_a_linear_model():
  # Two classes: the example flips iff the greedy gain along w_other − w_y beats the margin.
  w, b = _two_class_linear(seed=7, dim=16)
  rng = np.random.default_rng(8)
  x = rng.uniform(0, 1, (160, 16)).astype(np.float32)
  x[:, :4] = rng.integers(0, 2, (160, 4))                # some coordinates cannot move one way
  logits_fn = helpers.linear_logits_fn(w, b)
  y = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))
  eps = 2.5

  def exact(radius):
    z = x @ w + b
    margin = z[np.arange(len(x)), y] - z[np.arange(len(x)), 1 - y]
    gain = [_l1_box_gain(w[:, 1 - t] - w[:, t], xi, radius) for xi, t in zip(x, y)]
    return margin > np.array(gain)

  robust = exact(eps)
  clear = exact(0.97 * eps) == exact(1.03 * eps)
  assert 0.2 < robust.mean() < 0.8 and clear.sum() > 140
  # From x: a random start's mass off the sparse optimum decays only slowly under sparse steps.
  x_adv = attacks.pgd(logits_fn, jnp.asarray(x), jnp.asarray(y), key=KEY, eps=eps,
                      step_size=eps / 40, num_steps=100, norm="l1", loss="margin", init="none")
  found = np.asarray(jnp.argmax(logits_fn(x_adv), -1)) == y
  np.testing.assert_array_equal(found[clear], robust[clear])
  assert np.all(np.abs(np.asarray(x_adv) - x).sum(1) <= eps * (1 + 1e-5))


def test_l1_step_moves_only_coordinates_that_can_move():
  grad = jnp.array([[3.0, -2.0, 1.0, 0.5]])
  point = jnp.array([[1.0, 0.5, 0.5, 0.5]])      # coordinate 0 sits on the face it points at
  direction = geometry.ascent_direction(grad, "l1", point)
  np.testing.assert_allclose(direction, [[0.0, -1.0, 0.0, 0.0]])
  np.testing.assert_allclose(geometry.sparse_sign(grad, jnp.array([3])),
                             [[1 / 3, -1 / 3, 1 / 3, 0.0]])
  assert float(geometry.dual_norm(grad, "l1")[0]) == 3.0
  assert float(geometry.norm(grad, "l1")[0]) == 6.5
