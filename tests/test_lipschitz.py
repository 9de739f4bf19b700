"""robustwidth.lipschitz: input-gradient norms against per-example jax.grad, the Lipschitz
estimates against a linear model's exact constant, and the PGD probe."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustwidth import attacks, lipschitz, models
from tests import helpers


def _model(family):
  return models.create_model(family, width=1, num_classes=3, input_shape=(4, 4, 1), seed=0,
                             base_channels=4, depth=1)


def _inputs(n, seed=1, shape=(4, 4, 1)):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n,) + shape)


# Input-gradient norms.

def _per_example_loss(loss, logits, label, logits_nat):
  if loss == "ce":
    return -jax.nn.log_softmax(logits)[label]
  if loss == "margin":
    others = jnp.where(jnp.arange(logits.shape[0]) == label, -jnp.inf, logits)
    return jnp.max(others) - logits[label]
  p = jax.nn.softmax(logits_nat)
  return jnp.sum(p * (jnp.log(p) - jax.nn.log_softmax(logits)))


@pytest.mark.parametrize("loss", lipschitz.GRADIENT_LOSSES)
def test_input_gradient_norm_matches_per_example_grad(loss):
  logits_fn = models.model_logits_fn(_model("cnn"))
  x, x_natural = _inputs(4, 1), _inputs(4, 2)
  y = jnp.array([0, 1, 2, 1])
  kwargs = {"x_natural": x_natural} if loss == "kl" else {}
  norms = jax.jit(lambda x, y: [lipschitz.input_gradient_norm(logits_fn, x, y, ord=o,
                                                               loss=loss, **kwargs)
                                for o in (1, 2, np.inf)])(x, y)
  grad_fn = jax.jit(jax.grad(lambda xi, label, xn: _per_example_loss(
      loss, logits_fn(xi[None])[0], label, logits_fn(xn[None])[0])))
  for i in range(4):
    grad = grad_fn(x[i], y[i], x_natural[i])
    expected = [jnp.sum(jnp.abs(grad)), jnp.sqrt(jnp.sum(grad ** 2)), jnp.max(jnp.abs(grad))]
    np.testing.assert_allclose([n[i] for n in norms], expected, rtol=1e-5)


def test_kl_gradient_needs_and_vanishes_at_the_natural_input():
  logits_fn = models.model_logits_fn(_model("mlp"))
  x = _inputs(3)
  with pytest.raises(ValueError, match="x_natural"):
    lipschitz.input_gradient_norm(logits_fn, x, None, loss="kl")
  with pytest.raises(ValueError, match="needs labels"):
    lipschitz.input_gradient_norm(logits_fn, x, None, loss="ce")
  with pytest.raises(ValueError, match="ord"):
    lipschitz.input_gradient_norm(logits_fn, x, jnp.zeros(3, jnp.int32), ord=3)
  at_x = lipschitz.input_gradient_norm(logits_fn, x, None, loss="kl", x_natural=x)
  np.testing.assert_allclose(at_x, 0.0, atol=1e-5)


# Local Lipschitz estimates on a linear model, whose constant is known exactly.

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_lipschitz_estimates_equal_its_dual_norm(norm):
  # Two classes: the margin z_other − z_y is linear in x with gradient ±(w1 − w0).
  w = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w + jnp.array([0.1, -0.2])
  x = 0.3 + 0.4 * _inputs(4)
  y = jnp.array([0, 1, 1, 0])
  difference = w[:, 1] - w[:, 0]
  exact = jnp.sum(jnp.abs(difference)) if norm == "linf" else jnp.linalg.norm(difference)
  ball = dict(key=jax.random.PRNGKey(1), eps=0.1, step_size=0.1, num_steps=2, norm=norm,
              loss="margin")

  @jax.jit
  def estimates(x, y):
    iterates = lipschitz.lipschitz_attack_iterates(logits_fn, x, y, init="uniform", **ball)
    ascent = lipschitz.lipschitz_gradient_ascent(logits_fn, x, y, **ball)
    # One full PGD step from x reaches the maximizer x + ε·(steepest direction) exactly.
    x_adv = attacks.pgd(logits_fn, x, y, key=ball["key"], eps=0.1, step_size=0.1,
                        num_steps=1, norm=norm, loss="margin", init="none")
    ratio = lipschitz.lipschitz_finite_difference(logits_fn, x, x_adv, y, norm=norm, loss="margin")
    return iterates, ascent, ratio

  iterates, ascent, ratio = estimates(x, y)
  for estimate in (iterates, ascent, ratio):
    np.testing.assert_allclose(estimate, jnp.full(4, exact), rtol=1e-5)
  zero = lipschitz.lipschitz_finite_difference(logits_fn, x, x, y, norm=norm, loss="margin")
  np.testing.assert_array_equal(zero, 0.0)


def test_lipschitz_estimators_run_on_a_network():
  logits_fn = models.model_logits_fn(_model("mlp"))
  x = _inputs(4)
  ball = dict(key=jax.random.PRNGKey(2), eps=0.1, step_size=0.03, num_steps=3)

  @jax.jit
  def estimates(x):
    x_adv = attacks.pgd(logits_fn, x, None, loss="kl", init="normal", **ball)
    return (lipschitz.lipschitz_attack_iterates(logits_fn, x, **ball),
            lipschitz.lipschitz_gradient_ascent(logits_fn, x, **ball),
            lipschitz.lipschitz_finite_difference(logits_fn, x, x_adv))

  iterates, ascent, ratio = estimates(x)
  assert iterates.shape == ascent.shape == ratio.shape == (4,)
  assert bool(jnp.all(iterates > 0)) and bool(jnp.all(ascent > 0)) and bool(jnp.all(ratio >= 0))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_probe_returns_the_attacks_worst_case_and_the_exact_dual_norm(norm):
  # Two classes, margin loss: ∇ₓ = w_other − w_y = d everywhere, so the probe is ‖d‖_* for
  # every example (not that over the batch size, as a batch-mean loss would give), and steps
  # of ε from x reach the worst case x + ε·sign(d) (ℓ∞) or x + ε·d/‖d‖₂ (ℓ2) of the ball.
  rng = np.random.default_rng(5)
  w = rng.normal(size=(12, 2)).astype(np.float32)
  b = 0.1 * rng.normal(size=2).astype(np.float32)
  x = jnp.asarray(rng.uniform(0.2, 0.8, size=(32, 12)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 2, size=32))
  x_adv, probe = lipschitz.pgd_lipschitz_probe(
      helpers.linear_logits_fn(w, b), x, y, key=jax.random.key(0), eps=0.1, step_size=0.1,
      num_steps=2, norm=norm, loss="margin", init="none")
  d = (w[:, 1] - w[:, 0])[None, :] * np.where(np.asarray(y) == 0, 1.0, -1.0)[:, None]
  worst = x + 0.1 * (np.sign(d) if norm == "linf" else d / np.linalg.norm(d, axis=1,
                                                                          keepdims=True))
  np.testing.assert_allclose(x_adv, worst, atol=1e-5)
  dual = {"linf": 1, "l2": 2}[norm]
  np.testing.assert_allclose(probe, np.linalg.norm(w[:, 1] - w[:, 0], ord=dual), rtol=1e-5)
