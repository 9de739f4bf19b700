"""Losses against hand-computed values; metrics against numpy counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustwidth import losses, metrics

# Two examples, three classes. By hand (natural logs):
#   softmax([0, ln 2, ln 5]) = [1/8, 2/8, 5/8];  softmax([ln 3, 0, 0]) = [3/5, 1/5, 1/5].
NAT = jnp.log(jnp.array([[1.0, 2.0, 5.0], [3.0, 1.0, 1.0]]))
ADV = jnp.log(jnp.array([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0]]))  # softmax = [1/4, 1/4, 1/2]
LABELS = jnp.array([2, 1])
CE_NAT = [np.log(8 / 5), np.log(5)]
KL = [1 / 8 * np.log((1 / 8) / (1 / 4)) + 2 / 8 * np.log((2 / 8) / (1 / 4))
      + 5 / 8 * np.log((5 / 8) / (1 / 2)),
      3 / 5 * np.log((3 / 5) / (1 / 4)) + 1 / 5 * np.log((1 / 5) / (1 / 4))
      + 1 / 5 * np.log((1 / 5) / (1 / 2))]
CE_ADV = [np.log(2), np.log(4)]


def test_cross_entropy_is_the_batch_mean():
  assert float(losses.cross_entropy(NAT, LABELS)) == pytest.approx(np.mean(CE_NAT), rel=1e-6)


def test_trades_kl_per_example():
  np.testing.assert_allclose(losses.trades_kl(NAT, ADV), KL, rtol=1e-5)
  np.testing.assert_allclose(losses.trades_kl(NAT, NAT), [0.0, 0.0], atol=1e-6)


def test_trades_loss_by_hand():
  expected = np.mean(CE_NAT) + 6.0 * np.mean(KL)
  assert float(losses.trades(NAT, ADV, LABELS, 6.0)) == pytest.approx(expected, rel=1e-5)


def test_trades_stop_gradient_target_changes_only_the_gradient():
  value = lambda sg: losses.trades(NAT, ADV, LABELS, 6.0, stop_gradient_target=sg)
  assert float(value(True)) == pytest.approx(float(value(False)), rel=1e-6)
  grad = lambda sg: jax.grad(lambda z: losses.trades(z, ADV, LABELS, 6.0,
                                                     stop_gradient_target=sg))(NAT)
  # With the target stopped, only CE differentiates through the clean logits:
  # d/dz mean CE = (softmax(z) − onehot(y)) / B.
  expected = (jax.nn.softmax(NAT) - jax.nn.one_hot(LABELS, 3)) / 2
  np.testing.assert_allclose(grad(True), expected, atol=1e-6)
  assert not np.allclose(grad(False), expected, atol=1e-3)


def test_pgd_at_is_eq1_and_lambda_one_is_madry():
  lam = 3.0
  expected = np.mean(CE_NAT) + lam * (np.mean(CE_ADV) - np.mean(CE_NAT))
  assert float(losses.pgd_at(NAT, ADV, LABELS, lam)) == pytest.approx(expected, rel=1e-5)
  assert float(losses.pgd_at(NAT, ADV, LABELS, 1.0)) == pytest.approx(np.mean(CE_ADV),
                                                                      rel=1e-5)


def test_pgd_at_clamped_form_by_hand():
  # The authors' form: CE(x) + λ · mean over examples of max(CE(x̂), CE(x)) − CE(x).
  lam = 2.0
  expected = np.mean(CE_NAT) + lam * np.mean(np.maximum(CE_ADV, CE_NAT) - CE_NAT)
  assert float(losses.pgd_at(NAT, ADV, LABELS, lam, "clamped")) == pytest.approx(
      expected, rel=1e-5)
  # An example whose adversarial CE is below its natural CE contributes 0, not a negative.
  assert float(losses.pgd_at_regularizer(ADV, NAT, LABELS, "clamped")) == pytest.approx(
      np.mean(np.maximum(CE_NAT, CE_ADV) - CE_ADV), rel=1e-5)


def _numpy_counts(nat, adv, y):
  nat, adv = nat.argmax(-1), adv.argmax(-1)
  correct, stable, adv_correct = nat == y, adv == nat, adv == y
  return {
      "count": len(y), "correct": correct.sum(), "robust": adv_correct.sum(),
      "stable": stable.sum(), "correct_stable": (correct & stable).sum(),
      "correct_unstable": (correct & ~stable).sum(), "wrong_stable": (~correct & stable).sum(),
      "wrong_adv_correct": (~correct & adv_correct).sum(),
      "wrong_unstable_wrong": (~correct & ~stable & ~adv_correct).sum(),
  }


def _random_logits(seed, n, k=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, k)).astype(np.float32), rng.normal(size=(n, k)).astype(np.float32),
          rng.integers(0, k, size=n))


def test_counts_match_numpy_and_the_cells_partition():
  nat, adv, y = _random_logits(0, 500)
  counts = jax.device_get(metrics.robustness_counts(nat, adv, y))
  expected = _numpy_counts(nat, adv, y)
  assert {k: int(v) for k, v in counts.items()} == {k: int(v) for k, v in expected.items()}
  assert sum(int(counts[c]) for c in metrics.CELLS) == 500
  assert counts["robust"] == counts["correct_stable"] + counts["wrong_adv_correct"]
  assert counts["stable"] == counts["correct_stable"] + counts["wrong_stable"]
  assert all(counts[c] > 0 for c in metrics.CELLS)  # Random logits reach every cell.


def test_fractions_aggregate_counts_not_means_of_means():
  nat, adv, y = _random_logits(1, 300)
  sizes = [7, 100, 193]  # Unequal batches: a mean of batch means would be wrong.
  totals, start = {}, 0
  for size in sizes:
    part = slice(start, start + size)
    totals = metrics.add_counts(totals, jax.device_get(
        metrics.robustness_counts(nat[part], adv[part], y[part])))
    start += size
  whole = metrics.robustness(nat, adv, y)
  assert metrics.fractions(totals) == whole
  expected = _numpy_counts(nat, adv, y)
  assert whole["natural_accuracy"] == expected["correct"] / 300
  assert whole["robust_accuracy"] == expected["robust"] / 300
  assert whole["perturbation_stability"] == expected["stable"] / 300


def test_mask_drops_padding():
  nat, adv, y = _random_logits(2, 50)
  mask = np.arange(50) < 30
  masked = metrics.robustness_counts(nat, adv, y, mask)
  assert {k: int(v) for k, v in masked.items()} == {
      k: int(v) for k, v in _numpy_counts(nat[:30], adv[:30], y[:30]).items()}


def test_bounds_of_the_decomposition():
  # A_nat + A_stab − 1 <= A_rob <= A_nat + (wrong_adv_correct fraction) (docs/paper.md §2).
  nat, adv, y = _random_logits(3, 1000)
  r = metrics.robustness(nat, adv, y)
  assert r["natural_accuracy"] + r["perturbation_stability"] - 1 <= r["robust_accuracy"]
  assert r["robust_accuracy"] <= min(
      r["natural_accuracy"], r["perturbation_stability"]) + r["wrong_adv_correct"] / 1000


def test_empty_evaluation_is_an_error():
  with pytest.raises(ValueError, match="empty"):
    metrics.fractions({"count": 0, "correct": 0, "robust": 0, "stable": 0})


@pytest.mark.parametrize("change,message", [
    (dict(labels=np.zeros((6, 1), np.int64)), r"labels must have shape \(6,\)"),
    (dict(labels=np.array([0, 1, 2, 3, 4, 1])), r"labels must lie in \[0, 3\]"),
    (dict(labels=np.array([0, 1, -1, 3, 2, 1])), r"labels must lie in \[0, 3\]"),
    (dict(adv=np.zeros((5, 4), np.float32)), "both of one shape"),
    (dict(nat=np.zeros((6,), np.float32)), r"must be \[B, K\] logits"),
    (dict(nat=np.full((6, 4), np.nan, np.float32)), "logits_nat hold NaN or infinite"),
    (dict(adv=np.where(np.arange(4) == 2, np.inf, 0.0)[None].repeat(6, 0)),
     "logits_adv hold NaN or infinite values for 6 of 6"),
])
def test_robustness_refuses_what_would_give_a_wrong_fraction(change, message):
  # Labels [B, 1] broadcast against [B] predictions (accuracy 2.0 before the check); NaN
  # logits argmax to class 0.
  nat, adv, y = _random_logits(4, 6)
  args = {"nat": nat, "adv": adv, "labels": y, **change}
  with pytest.raises(ValueError, match=message):
    metrics.robustness(args["nat"], args["adv"], args["labels"])


# MART on two examples, three classes (the clean logits NAT above):
#   softmax(ADV_MART) = [1/8, 3/8, 4/8] and [2/8, 1/8, 5/8].
# Example 0 (y = 2) is most probable under x̂, so its strongest wrong class is the runner-up,
# class 1 (3/8); example 1 (y = 1) is wrong under x̂, and its strongest wrong class is the top
# one, class 2 (5/8).
ADV_MART = jnp.log(jnp.array([[1.0, 3.0, 4.0], [2.0, 1.0, 5.0]]))
MART_BCE = [-np.log(4 / 8) - np.log(1.0001 - 3 / 8 + 1e-12),
            -np.log(1 / 8) - np.log(1.0001 - 5 / 8 + 1e-12)]
MART_KL = [2 / 8 * np.log((2 / 8) / (3 / 8)) + 5 / 8 * np.log((5 / 8) / (4 / 8)),
           3 / 5 * np.log((3 / 5) / (2 / 8)) + 1 / 5 * np.log((1 / 5) / (1 / 8))
           + 1 / 5 * np.log((1 / 5) / (5 / 8))]
MART_WEIGHT = [1.0000001 - 5 / 8, 1.0000001 - 1 / 5]  # 1 − p_y(x) of the clean predictions


def test_mart_terms_and_loss_by_hand():
  np.testing.assert_allclose(losses.mart_boosted_cross_entropy(ADV_MART, LABELS), MART_BCE,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.mart_weighted_kl(NAT, ADV_MART, LABELS),
                             np.multiply(MART_KL, MART_WEIGHT), rtol=1e-5)
  expected = np.mean(MART_BCE) + 6.0 * np.mean(np.multiply(MART_KL, MART_WEIGHT))
  assert float(losses.mart(NAT, ADV_MART, LABELS, 6.0)) == pytest.approx(expected, rel=1e-5)


def _mart_numpy(nat, adv, y, lam):
  """The reference's MART loss, written from its description in float64: the strongest wrong
  class from an argsort of p(x̂), nothing detached."""
  softmax = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(
      z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
  p, q = softmax(nat), softmax(adv)
  rows = np.arange(len(y))
  top2 = np.argsort(q, axis=1)[:, -2:]
  wrong = np.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
  bce = -np.log(q[rows, y]) - np.log(1.0001 - q[rows, wrong] + 1e-12)
  kl = np.sum(p * (np.log(p) - np.log(q + 1e-12)), axis=1) * (1.0000001 - p[rows, y])
  return bce.mean() + lam * kl.mean()


def test_mart_gradients_match_finite_differences_of_the_reference_loss():
  # Gradients flow through p(x) in both the KL and its weight, and through p(x̂) in all terms.
  rng = np.random.default_rng(0)
  nat, adv = rng.normal(size=(2, 4, 5))
  y = np.array([0, 3, 1, 4])
  grad_nat, grad_adv = jax.grad(losses.mart, argnums=(0, 1))(
      jnp.asarray(nat, jnp.float32), jnp.asarray(adv, jnp.float32), jnp.asarray(y), 6.0)
  h = 1e-6
  for logits, grad, which in ((nat, grad_nat, 0), (adv, grad_adv, 1)):
    numeric = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
      step = np.zeros_like(logits)
      step[index] = h
      plus = [nat, adv]
      minus = [nat, adv]
      plus[which], minus[which] = logits + step, logits - step
      numeric[index] = (_mart_numpy(*plus, y, 6.0) - _mart_numpy(*minus, y, 6.0)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=2e-5)
