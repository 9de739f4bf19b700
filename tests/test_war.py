"""Width Adjusted Regularization rules on synthetic loss sequences."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustwidth import war


@pytest.mark.parametrize("width,gamma,expected", [
    (1, 0.5, 6.0), (4, 0.5, 12.0), (16, 0.5, 24.0), (10, 0.0, 6.0), (8, 1.0, 48.0),
    (2, 0.5, 6.0 * 2 ** 0.5)])
def test_static_rule_values(width, gamma, expected):
  rule = war.Rule("static", beta0=6.0, width=width, reference_width=1, gamma=gamma)
  assert rule.initial_beta() == pytest.approx(expected)
  assert float(rule.init().beta) == pytest.approx(expected)
  assert war.static_beta(6.0, 5, 5, 0.7) == 6.0


def _run(rule: war.Rule, natural, robust) -> list[float]:
  update = jax.jit(rule.update)
  state, betas = rule.init(), []
  for n, r in zip(natural, robust):
    state = update(state, jnp.float32(n), jnp.float32(r))
    betas.append(float(state.beta))
  return betas, state


def test_adaptive_rule_converges_to_the_reference_ratio():
  # L_nat ≈ 2, R_rob ≈ 0.1 (noisy): λ·R/L tracks r0 = 0.6 when λ → r0 · L / R = 12.
  rng = np.random.default_rng(0)
  natural = 2.0 + 0.2 * rng.standard_normal(3000)
  robust = 0.1 + 0.01 * rng.standard_normal(3000)
  rule = war.Rule("adaptive", beta0=6.0, reference_ratio=0.6, beta_max=50.0, ema_decay=0.99)
  betas, state = _run(rule, natural, robust)
  assert np.mean(betas[-500:]) == pytest.approx(12.0, rel=0.02)
  ratio = np.mean(betas[-500:]) * robust[-500:].mean() / natural[-500:].mean()
  assert ratio == pytest.approx(0.6, rel=0.03)


def test_adaptive_rule_never_goes_below_beta0_and_respects_the_bound():
  rule = war.Rule("adaptive", beta0=6.0, reference_ratio=0.6, beta_max=20.0)
  low, _ = _run(rule, [1.0] * 200, [1.0] * 200)  # Target 0.6 < β0.
  assert min(low) == 6.0 and max(low) == 6.0
  high, _ = _run(rule, [1.0] * 200, [0.001] * 200)  # Target 600 > β_max.
  assert max(high) == 20.0 and high[-1] == 20.0
  assert all(6.0 <= b <= 20.0 for b in high)


def test_the_first_updates_are_bias_corrected():
  # An uncorrected EMA starts near 0: robust_ema ≈ 0 would push λ to β_max at once.
  rule = war.Rule("adaptive", beta0=6.0, reference_ratio=0.6, beta_max=100.0)
  betas, _ = _run(rule, [2.0] * 3, [0.1] * 3)
  np.testing.assert_allclose(betas, 12.0, rtol=1e-5)


def test_fixed_and_static_rules_do_not_move_and_every_rule_records_its_ratio():
  for rule in (war.Rule("fixed", beta0=6.0), war.Rule("static", beta0=6.0, width=4, gamma=0.5)):
    betas, state = _run(rule, [2.0, 1.0], [0.5, 0.25])
    assert len(set(betas)) == 1
    # r = Σ λ·R / Σ L over the run.
    assert war.measured_ratio(state) == pytest.approx(betas[0] * 0.75 / 3.0)


def test_rule_arguments_are_checked():
  with pytest.raises(ValueError, match="Unknown WAR rule"):
    war.Rule("exponential")
  with pytest.raises(ValueError, match="reference_ratio > 0"):
    war.Rule("adaptive", beta0=6.0)
  with pytest.raises(ValueError, match="beta_max"):
    war.Rule("adaptive", beta0=6.0, reference_ratio=0.5, beta_max=3.0)
  assert war.Rule("adaptive", beta0=6, reference_ratio=0.5, beta_max=24).describe() == (
      "adaptive(beta0=6, r0=0.5, beta_max=24, ema=0.99)")
