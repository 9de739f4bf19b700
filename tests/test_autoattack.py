"""AutoAttack in JAX: the losses by hand, exact worst cases on linear models, the threat model,
the cascade (each attack only on the points still robust; the result the per-example AND) and
APGD against PGD."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustwidth import attacks, data
from robustwidth.attacks import geometry, objectives
from robustwidth.attacks.fab import project_l1, project_l2, project_linf
from robustwidth.attacks.apgd import checkpoint_thresholds
from robustwidth.attacks.autoattack import version_settings
from robustwidth.attacks.square import window_corners, window_pattern, window_sizes

KEY = jax.random.key(0)


# ---------------------------------------------------------------- losses, by hand

def test_dlr_by_hand():
  logits = jnp.array([[3.0, 1.0, 2.0, 0.5],    # correct: -(3 - 2) / (3 - 1)
                      [1.0, 4.0, 2.0, 0.0],    # wrong, true class third: (4 - 1) / (4 - 1)
                      [1.0, 4.0, 0.0, 2.0]])   # wrong, true class last: (4 - 0) / (4 - 1)
  labels = jnp.array([0, 0, 2])
  np.testing.assert_allclose(objectives.dlr(logits, labels), [-0.5, 1.0, 4.0 / 3.0], rtol=1e-6)


def test_targeted_dlr_by_hand():
  logits = jnp.array([[3.0, 1.0, 2.0, 0.5],    # -(3 - 2) / (3 - (1 + 0.5) / 2)
                      [1.0, 4.0, 2.0, 0.0]])   # wrong: -(1 - 4) / (4 - (1 + 0) / 2)
  labels, targets = jnp.array([0, 0]), jnp.array([2, 1])
  np.testing.assert_allclose(objectives.targeted_dlr(logits, labels, targets),
                             [-1.0 / 2.25, 3.0 / 3.5], rtol=1e-6)
  # Invariant to shifting and scaling the logits, as the DLR losses are designed to be.
  np.testing.assert_allclose(objectives.targeted_dlr(5 * logits - 7, labels, targets),
                             [-1.0 / 2.25, 3.0 / 3.5], rtol=1e-5)


def test_schedules_match_the_reference():
  assert list(np.flatnonzero(checkpoint_thresholds(100) >= 0)) == [21, 40, 56, 69, 79, 86, 92,
                                                                   98]
  assert checkpoint_thresholds(100)[21] == pytest.approx(0.75 * 22)
  sides = window_sizes(5000, 0.8, 8, 8, "linf")
  assert [sides[i] for i in (0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 4999)] == [
      7, 7, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
  assert set(window_sizes(5000, 0.8, 8, 8, "l2")) == {7, 5, 3}
  pattern = window_pattern(3)
  assert np.sum(pattern ** 2) == pytest.approx(1.0)
  assert np.all(pattern[:1] > 0) and np.all(pattern[1:] < 0)
  assert np.argmax(-pattern[1:]) == 4   # the bottom half peaks at its centre


# ---------------------------------------------------------------- FAB's projections

def _brute_force_linf(t, w, b):
  """Bisection on λ for the box-constrained minimal-ℓ∞ step onto w·z = b."""
  out = []
  for ti, wi, bi in zip(t, w, b):
    gap = wi @ ti - bi
    wi = wi if gap >= 0 else -wi
    room = np.where(wi > 0, ti, 1 - ti)
    reach = lambda lam: np.sum(np.abs(wi) * np.minimum(lam, room))
    lo, hi = 0.0, 1.0
    if reach(hi) < abs(gap):
      lo = hi
    for _ in range(60):
      mid = (lo + hi) / 2
      lo, hi = (mid, hi) if reach(mid) < abs(gap) else (lo, mid)
    out.append(-np.sign(wi) * np.minimum(hi, room))
  return np.array(out)


def _brute_force_l2(t, w, b):
  out = []
  for ti, wi, bi in zip(t, w, b):
    gap = wi @ ti - bi
    wi = wi if gap >= 0 else -wi
    ratio = np.where(wi > 0, ti, 1 - ti) / np.abs(wi)
    reach = lambda a: np.sum(wi ** 2 * np.minimum(a, ratio))
    lo, hi = 0.0, float(np.max(ratio))
    for _ in range(80):
      mid = (lo + hi) / 2
      lo, hi = (mid, hi) if reach(mid) < abs(gap) else (lo, mid)
    out.append(-np.minimum(hi, ratio) * wi)
  return np.array(out)


def _brute_force_l1(t, w, b):
  """The minimal-ℓ1 box-constrained step onto w·z = b as a linear program (d = p − q)."""
  optimize = pytest.importorskip("scipy.optimize")
  out = []
  for ti, wi, bi in zip(t.astype(np.float64), w.astype(np.float64), b.astype(np.float64)):
    d = len(ti)
    target = bi - wi @ ti
    bounds = [(0, 1 - v) for v in ti] + [(0, v) for v in ti]
    result = optimize.linprog(np.ones(2 * d), A_eq=np.concatenate([wi, -wi])[None],
                              b_eq=[target], bounds=bounds)
    if result.status == 2:      # unreachable: the far corner
      out.append(np.where(wi * np.sign(target) > 0, 1 - ti, -ti))
    else:
      out.append(result.x[:d] - result.x[d:])
  return np.array(out)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_fab_projections_solve_the_box_constrained_problem(norm):
  rng = np.random.default_rng(0)
  t = rng.uniform(0, 1, (12, 16)).astype(np.float32)
  t[:, :4] = rng.integers(0, 2, (12, 4))            # points on the box's faces
  w = rng.normal(size=(12, 16)).astype(np.float32)
  b = (np.sum(w * t, 1) + rng.normal(0, 1.5, 12)).astype(np.float32)
  b[0] = np.sum(w[0] * t[0]) + 100.0                # unreachable: go to the far corner
  project, brute = {"linf": (project_linf, _brute_force_linf),
                    "l2": (project_l2, _brute_force_l2),
                    "l1": (project_l1, _brute_force_l1)}[norm]
  d = np.asarray(project(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b)))
  np.testing.assert_allclose(d, brute(t, w, b), atol=2e-4)
  assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)
  reachable = np.arange(12) > 0
  np.testing.assert_allclose(np.sum(w * (t + d), 1)[reachable], b[reachable], atol=2e-3)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_projections_are_exact_on_image_sized_rows_with_tied_breakpoints(norm):
  """784 coordinates on the 8-bit grid, as Fashion-MNIST's: hundreds of equal breakpoints."""
  rng = np.random.default_rng(1)
  t = (rng.integers(0, 256, (8, 784)) / 255).astype(np.float32)
  t[:, :300] = 0.0                                   # a black background
  w = rng.normal(size=(8, 784)).astype(np.float32)
  b = (np.sum(w * t, 1) + rng.normal(0, 20.0, 8)).astype(np.float32)
  project, brute = {"linf": (project_linf, _brute_force_linf),
                    "l2": (project_l2, _brute_force_l2)}[norm]
  d = np.asarray(project(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b)))
  expected = brute(t.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
  np.testing.assert_allclose(d, expected, atol=1e-5)
  np.testing.assert_allclose(np.sum(w * (t + d), 1), b, rtol=1e-4, atol=1e-3)


def test_square_window_corners_follow_the_reference():
  """The reference draws a corner as ⌊u·(H − side)⌋ (torch.rand in [0, 1)): on 8×8, a 1-pixel
  window lands on rows and columns 0-6, never 7; a full-size window sits at 0."""
  u = jnp.array([[0.0, 0.0], [0.5, 0.99], [np.nextafter(np.float32(1), np.float32(0))] * 2])
  np.testing.assert_array_equal(window_corners(u, 1, 8, 8), [[0, 0], [3, 6], [6, 6]])
  np.testing.assert_array_equal(window_corners(u, 3, 8, 6), [[0, 0], [2, 2], [4, 2]])
  np.testing.assert_array_equal(window_corners(u, 8, 8, 8), [[0, 0], [0, 0], [0, 0]])


# ---------------------------------------------------------------- linear models, exactly

def _linear(num_classes, seed=0, dim=36, dead=None):
  """A linear classifier on flattened inputs; the input features flagged in `dead` get no
  weight."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(dim, num_classes))
  if dead is not None:
    w[dead] = 0.0
  w = jnp.asarray(w, jnp.float32)
  bias = jnp.asarray(rng.normal(size=(num_classes,)), jnp.float32)
  return lambda x: x.reshape(x.shape[0], -1) @ w + bias, np.asarray(w), np.asarray(bias)


def _last_row_and_column(side):
  """[side²] flags of the last row and column of a side × side single-channel image."""
  grid = np.zeros((side, side), bool)
  grid[-1, :] = grid[:, -1] = True
  return grid.reshape(-1)


def _l1_box_gain(v, x, eps):
  """max ⟨v, δ⟩ over ‖δ‖₁ ≤ ε, x + δ ∈ [0, 1], rows of [N, D]: spend the budget on the
  coordinates of largest |v_i|, each up to the box's face on v_i's side."""
  order = np.argsort(-np.abs(v), axis=1)
  weight = np.take_along_axis(np.abs(v), order, 1)
  room = np.take_along_axis(np.where(v > 0, 1 - x, x), order, 1)
  spent = np.cumsum(room, 1) - room                       # budget used before coordinate k
  return np.sum(weight * np.clip(eps - spent, 0, room), 1)


def _exact_robust(w, bias, x, y, eps, norm):
  """Closed form: class j beats y somewhere in the ball iff (w_y − w_j)·x + b_y − b_j ≤
  max_δ (w_j − w_y)·δ, which is ε‖w_y − w_j‖_dual where the box never binds (ℓ∞, ℓ2 here)
  and, for ℓ1, the greedy fill of the box (`_l1_box_gain`)."""
  flat = x.reshape(len(x), -1)
  margins = flat @ w + bias
  robust = np.ones(len(x), bool)
  for j in range(w.shape[1]):
    v = w[:, y] - w[:, [j]]
    if norm == "l1":
      gain = _l1_box_gain(-v.T, flat, eps)
    else:
      gain = eps * (np.abs(v).sum(0) if norm == "linf" else np.sqrt((v ** 2).sum(0)))
    gap = margins[np.arange(len(x)), y] - margins[:, j]
    robust &= (j == y) | (gap > gain)
  return robust & (margins.argmax(1) == y)


def _interior_points(num_classes, w, bias, eps, norm, n=48, seed=1):
  """Points in [0.3, 0.7] (the box never binds at these ℓ∞ and ℓ2 eps; it does in ℓ1) whose
  exact worst case is not within 5% of the boundary, labelled by the model itself so most
  start correct."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.3, 0.7, (4 * n, 6, 6, 1)).astype(np.float32)
  y = (x.reshape(len(x), -1) @ w + bias).argmax(1)
  y = np.where(rng.uniform(size=len(x)) < 0.15, (y + 1) % num_classes, y).astype(np.int32)
  clear = (_exact_robust(w, bias, x, y, 0.95 * eps, norm) ==
           _exact_robust(w, bias, x, y, 1.05 * eps, norm))
  return x[clear][:n], y[clear][:n]


def _robust(logits_fn, x_adv, y):
  return np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_adv)), -1)) == y


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.25)])
def test_each_attack_reaches_the_exact_worst_case_of_a_linear_model(norm, eps):
  binary, wb, bb = _linear(2)
  x, y = _interior_points(2, wb, bb, eps, norm)
  exact = _exact_robust(wb, bb, x, y, eps, norm)
  assert 0 < exact.sum() < len(x)
  x_adv = attacks.apgd(binary, x, y, key=KEY, eps=eps, norm=norm, num_steps=20)
  np.testing.assert_array_equal(_robust(binary, x_adv, y), exact)

  multi, wm, bm = _linear(10, seed=2)
  x, y = _interior_points(10, wm, bm, eps, norm)
  exact = _exact_robust(wm, bm, x, y, eps, norm)
  assert 0 < exact.sum() < len(x)
  runs = {
      "apgd-t": attacks.apgd_targeted(multi, x, y, key=KEY, eps=eps, norm=norm, num_steps=10),
      "fab-t": attacks.fab_targeted(multi, x, y, eps=eps, norm=norm, num_steps=20),
  }
  for name, x_adv in runs.items():
    np.testing.assert_array_equal(_robust(multi, x_adv, y), exact, err_msg=name)
  # Square, like the reference, never puts a window corner on the last valid position, so a
  # 1-pixel window never reaches the last row or column: give those pixels no weight.
  multi, wm, bm = _linear(10, seed=2, dead=_last_row_and_column(6))
  x, y = _interior_points(10, wm, bm, eps, norm)
  exact = _exact_robust(wm, bm, x, y, eps, norm)
  assert 0 < exact.sum() < len(x)
  robust = _robust(multi, attacks.square(multi, x, y, key=KEY, eps=eps, norm=norm), y)
  if norm == "linf":
    np.testing.assert_array_equal(robust, exact)
  else:
    # ℓ2 Square's structured windows do not reach a dense optimum on every point: here it
    # misses 9 of the 41 attackable points (the reference's Square 8 to 10, seeds 0-2).
    assert np.all(robust[exact]) and np.sum(robust & ~exact) <= 10


def test_l1_attacks_reach_the_exact_worst_case_of_a_linear_model():
  """ℓ1 with the box binding: the worst case fills the coordinates of largest weight."""
  eps = 0.5
  binary, wb, bb = _linear(2)
  x, y = _interior_points(2, wb, bb, eps, "l1")
  exact = _exact_robust(wb, bb, x, y, eps, "l1")
  assert 0 < exact.sum() < len(x)
  x_adv = attacks.apgd(binary, x, y, key=KEY, eps=eps, norm="l1", num_steps=20)
  np.testing.assert_array_equal(_robust(binary, x_adv, y), exact)
  assert np.all(np.abs(x_adv - x).reshape(len(x), -1).sum(1) <= eps * (1 + 1e-5))

  multi, wm, bm = _linear(10, seed=2)
  x, y = _interior_points(10, wm, bm, eps, "l1")
  exact = _exact_robust(wm, bm, x, y, eps, "l1")
  assert 0 < exact.sum() < len(x)
  runs = {
      "apgd-t": attacks.apgd_targeted(multi, x, y, key=KEY, eps=eps, norm="l1", num_steps=20,
                                      num_targets=3),
      "fab-t": attacks.fab_targeted(multi, x, y, eps=eps, norm="l1", num_steps=20),
      "fab": attacks.fab(multi, x, y, key=KEY, eps=eps, norm="l1", num_steps=20, restarts=2),
  }
  for name, x_adv in runs.items():
    np.testing.assert_array_equal(_robust(multi, x_adv, y), exact, err_msg=name)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_l1_square_finds_what_the_reference_finds_on_a_linear_model():
  eps = 0.5
  multi, wm, bm = _linear(10, seed=2, dead=_last_row_and_column(6))
  x, y = _interior_points(10, wm, bm, eps, "l1")
  exact = _exact_robust(wm, bm, x, y, eps, "l1")
  x_adv = attacks.square(multi, x, y, key=KEY, eps=eps, norm="l1")
  assert np.all(np.abs(x_adv - x).reshape(len(x), -1).sum(1) <= eps * (1 + 1e-5))
  robust = _robust(multi, x_adv, y)
  # ℓ1 Square's windows spread the budget where the worst case is sparse: it misses 14 of
  # the 43 attackable points here (the reference's Square 15 and 14, seeds 0 and 1).
  assert np.all(robust[exact]) and np.sum(robust & ~exact) <= 15


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.25)])
def test_untargeted_fab_reaches_the_exact_worst_case_of_a_linear_model(norm, eps):
  multi, wm, bm = _linear(10, seed=2)
  x, y = _interior_points(10, wm, bm, eps, norm)
  exact = _exact_robust(wm, bm, x, y, eps, norm)
  x_adv = attacks.fab(multi, x, y, key=KEY, eps=eps, norm=norm, num_steps=20)
  np.testing.assert_array_equal(_robust(multi, x_adv, y), exact)


def _check_report(logits_fn, x, y, x_adv, report, eps, norm, names):
  size = np.asarray(geometry.norm(jnp.asarray(x_adv - x), norm))
  assert np.all(size <= eps * (1 + 1e-5)) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  np.testing.assert_array_equal(report["robust"], _robust(logits_fn, x_adv, y))
  assert report["attacks"] == list(names) and list(report["seconds"]) == list(names)


def test_plus_version_meets_the_exact_worst_case_of_a_linear_model():
  norm, eps = "linf", 0.06
  multi, wm, bm = _linear(10, seed=2, dead=_last_row_and_column(6))
  x, y = _interior_points(10, wm, bm, eps, norm)
  exact = _exact_robust(wm, bm, x, y, eps, norm)
  x_adv, report = attacks.autoattack(multi, x, y, key=KEY, eps=eps, norm=norm, version="plus",
                                     batch_size=64)
  _check_report(multi, x, y, x_adv, report, eps, norm, attacks.PLUS)
  np.testing.assert_array_equal(report["robust"], exact)
  settings = report["settings"]
  assert settings["apgd-ce"]["restarts"] == settings["apgd-dlr"]["restarts"] == 5
  assert settings["fab"]["restarts"] == 5 and settings["fab-t"]["num_targets"] == 9
  assert settings["apgd-t"]["num_targets"] == 9 and settings["square"]["num_queries"] == 5000


def test_rand_version_averages_gradients_of_a_randomized_model():
  """A linear model behind random input noise: the expected logits are the linear model's, so
  the exact worst case of the noise-free model is what EOT should find."""
  multi, wm, bm = _linear(10, seed=2)
  eps = 0.06
  x, y = _interior_points(10, wm, bm, eps, "linf")
  exact = _exact_robust(wm, bm, x, y, eps, "linf")

  def randomized(z, key):
    return multi(z + 0.002 * jax.random.normal(key, z.shape))

  def fixed_draws(z):  # Example i alone at its own draw, fold_in(fold_in(key, 0), i).
    return jnp.concatenate([randomized(z[i:i + 1], jax.random.fold_in(
        jax.random.fold_in(KEY, 0), i)) for i in range(len(z))])

  x_adv, report = attacks.autoattack(randomized, x, y, key=KEY, eps=eps, version="rand",
                                     batch_size=64)
  _check_report(fixed_draws, x, y, x_adv, report, eps, "linf", attacks.RAND)
  decided = _robust(multi, x_adv, y)
  # The noise moves the decision of points within 0.002·‖w‖ of the boundary only.
  assert np.sum(decided != exact) <= 1
  assert report["settings"]["apgd-ce"]["eot_draws"] == 20
  # Every draw depends on its example only: chunks of 4 (padded, and regrouped after
  # APGD-CE) find the same adversarial examples as one chunk of 10.
  x_small, small = attacks.autoattack(randomized, x, y, key=KEY, eps=eps, version="rand",
                                      batch_size=4)
  np.testing.assert_array_equal(x_small, x_adv)
  np.testing.assert_array_equal(small["robust"], report["robust"])


def test_l1_cascade_meets_the_exact_worst_case_and_uses_the_references_settings():
  multi, wm, bm = _linear(10, seed=2)
  eps = 0.5
  x, y = _interior_points(10, wm, bm, eps, "l1")
  names = ["apgd-ce", "fab-t"]
  x_adv, report = attacks.autoattack(multi, x, y, key=KEY, eps=eps, norm="l1",
                                     version="custom", attacks=names, batch_size=64)
  _check_report(multi, x, y, x_adv, report, eps, "l1", names)
  np.testing.assert_array_equal(report["robust"], _exact_robust(wm, bm, x, y, eps, "l1"))
  settings = version_settings("standard", "l1", num_classes=10)
  assert list(settings) == list(attacks.STANDARD)
  assert settings["apgd-ce"]["restarts"] == 5 and settings["apgd-t"]["num_targets"] == 5
  assert settings["apgd-ce"]["eps_schedule"] == "3*eps,2*eps,eps"
  assert report["settings"]["apgd-ce"] == settings["apgd-ce"]
  with pytest.raises(ValueError, match="linf and l2"):
    attacks.autoattack(multi, x, y, key=KEY, eps=eps, norm="l1", version="plus")


# ---------------------------------------------------------------- threat model, cascade

def _mlp(seed=0, hidden=32, train_steps=0):
  """A ReLU MLP on the 8×8 digits, optionally trained for a few hundred full-batch steps."""
  split = data.load("digits", "train")
  x, y = jnp.asarray(data.to_float(split.images)), jnp.asarray(split.labels)
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {"w1": jax.random.normal(k1, (64, hidden)) * 0.25, "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 10)) * 0.25, "b2": jnp.zeros(10)}
  apply = lambda p, z: jax.nn.relu(z.reshape(z.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"] + \
      p["b2"]
  if train_steps:
    opt = optax.adam(0.01)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

    @jax.jit
    def step(p, s):
      g = jax.grad(loss)(p)
      u, s = opt.update(g, s)
      return optax.apply_updates(p, u), s

    state = opt.init(params)
    for _ in range(train_steps):
      params, state = step(params, state)
  return jax.tree_util.Partial(apply, params)


@pytest.fixture(scope="module")
def trained_mlp():
  return _mlp(train_steps=300)


@pytest.fixture(scope="module")
def test_points():
  split = data.load("digits", "test")
  return data.to_float(split.images), split.labels


@pytest.mark.parametrize("norm,eps", [("linf", 0.08), ("l2", 0.6)])
def test_autoattack_stays_in_the_ball_and_the_box(trained_mlp, test_points, norm, eps):
  x, y = test_points[0][:40], test_points[1][:40]
  x_adv, report = attacks.autoattack(trained_mlp, x, y, key=KEY, eps=eps, norm=norm,
                                     batch_size=64)
  size = np.asarray(geometry.norm(jnp.asarray(x_adv - x), norm))
  assert np.all(size <= eps * (1 + 1e-5)) and report["max_perturbation"] <= eps * (1 + 1e-5)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  robust = _robust(trained_mlp, x_adv, y)
  np.testing.assert_array_equal(report["robust"], robust)
  clean = _robust(trained_mlp, x, y)
  # Clean errors and robust points keep the clean input; only fooled points moved.
  np.testing.assert_array_equal(x_adv[robust | ~clean], x[robust | ~clean])
  after = list(report["accuracy_after"].values())
  assert after == sorted(after, reverse=True) and report["clean_accuracy"] == clean.mean()
  assert report["robust_accuracy"] == robust.mean() < report["clean_accuracy"]
  assert set(report["seconds"]) == set(attacks.STANDARD)


def test_cascade_is_the_per_example_and_and_each_attack_touches_only_robust_points(
    trained_mlp, test_points):
  x, y = test_points[0][:48], test_points[1][:48]
  names = ["apgd-ce", "fab-t", "square"]
  kwargs = dict(key=KEY, eps=0.08, version="custom")
  alone = {name: attacks.autoattack(trained_mlp, x, y, attacks=[name], batch_size=64,
                                    **kwargs) for name in names}
  x_adv, report = attacks.autoattack(trained_mlp, x, y, attacks=names, batch_size=64, **kwargs)
  # Alone, every attack ran on a batch padded to 64; here the later ones on fewer rows padded
  # to 32: results are per example, whatever the batching.
  expected = np.logical_and.reduce([alone[n][1]["robust"] for n in names])
  np.testing.assert_array_equal(report["robust"], expected)
  assert 0 < report["robust"].sum() < report["clean_accuracy"] * len(x)
  # A point keeps the example of the first attack that fooled it: later ones never touch it.
  claimed = np.zeros(len(x), bool)
  for name in names:
    mine = ~alone[name][1]["robust"] & ~claimed & _robust(trained_mlp, x, y)
    np.testing.assert_allclose(x_adv[mine], alone[name][0][mine], atol=1e-6, err_msg=name)
    claimed |= mine
  assert claimed.sum() == len(x) * (report["clean_accuracy"] - report["robust_accuracy"])
  x_again, _ = attacks.autoattack(trained_mlp, x, y, attacks=names, batch_size=64, **kwargs)
  np.testing.assert_array_equal(x_again, x_adv)


def test_apgd_ce_is_never_weaker_than_pgd20(trained_mlp, test_points):
  x, y = test_points
  eps = 0.06
  pgd_adv = attacks.pgd(trained_mlp, x, y, key=KEY, eps=eps, step_size=2.5 * eps / 20,
                        num_steps=20)
  apgd_adv = attacks.apgd(trained_mlp, x, y, key=KEY, eps=eps)
  pgd_robust, apgd_robust = _robust(trained_mlp, pgd_adv, y), _robust(trained_mlp, apgd_adv, y)
  assert 0.1 < apgd_robust.mean() < 0.9
  assert apgd_robust.sum() <= pgd_robust.sum()


def test_bad_arguments_say_what_to_do(trained_mlp, test_points):
  x, y = test_points[0][:4], test_points[1][:4]
  with pytest.raises(ValueError, match="version"):
    attacks.autoattack(trained_mlp, x, y, key=KEY, eps=0.1, version="strong")
  with pytest.raises(ValueError, match="custom"):
    attacks.autoattack(trained_mlp, x, y, key=KEY, eps=0.1, attacks=["apgd-ce"])
  with pytest.raises(ValueError, match="Unknown attack"):
    attacks.autoattack(trained_mlp, x, y, key=KEY, eps=0.1, version="custom", attacks=["pgd"])
  with pytest.raises(ValueError, match="num_targets"):
    attacks.apgd_targeted(trained_mlp, x, y, key=KEY, eps=0.1, num_targets=10)
  with pytest.raises(ValueError, match="labels"):
    attacks.fab_targeted(trained_mlp, x, None, eps=0.1)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    attacks.square(trained_mlp, x * 2, y, key=KEY, eps=0.1)


@pytest.mark.filterwarnings("ignore::robustwidth.attacks.checks.EvaluationWarning")
def test_a_model_with_non_finite_logits_is_refused(test_points):
  # NaN logits argmax to class 0: with labels 0 the cascade reported 100% robust accuracy.
  x, y = test_points[0][:8], jnp.zeros(8, jnp.int32)
  def diverged(x):
    return jnp.full((x.shape[0], 10), jnp.nan)
  with pytest.raises(ValueError, match="clean examples hold NaN or infinite values for 8 of 8"):
    attacks.autoattack(diverged, x, y, key=KEY, eps=0.1, version="custom", attacks=["pgd-2"])
