"""The evaluation sanity checks: each warns on the failure it is for and stays quiet on a sane
deterministic model."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustwidth import attacks
from robustwidth.attacks import checks
from robustwidth.attacks.checks import EvaluationWarning

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(36, 10)), jnp.float32)
X = RNG.uniform(0, 1, (32, 6, 6, 1)).astype(np.float32)


def linear(x):
  return x.reshape(x.shape[0], -1) @ W


Y = np.asarray(jnp.argmax(linear(X), -1)).astype(np.int32)


def test_a_sane_model_passes_every_check():
  with warnings.catch_warnings():
    warnings.simplefilter("error", EvaluationWarning)
    assert not checks.check_randomized(linear, X)
    assert not checks.check_probabilities(linear(X))
    assert not checks.check_zero_gradients(linear, X, Y)
    assert not checks.check_square({"clean": 0.9, "apgd-ce": 0.5, "square": 0.499})
    assert not checks.check_eps_curve([0.1, 0.2, 1.0], [0.5, 0.3, 0.0], norm="linf",
                                      shape=X.shape)


def test_randomized_logits_are_flagged():
  noisy = lambda x: linear(x) + RNG.normal(0, 0.1, (x.shape[0], 10))
  with pytest.warns(EvaluationWarning, match="randomized"):
    assert checks.check_randomized(noisy, X)


def test_probabilities_are_flagged():
  with pytest.warns(EvaluationWarning, match="probabilities"):
    assert checks.check_probabilities(jax.nn.softmax(linear(X)))


def test_zero_gradients_are_flagged_on_correct_points_only():
  quantized = lambda x: linear(jnp.round(x * 4) / 4)   # piecewise constant: zero gradients
  with pytest.warns(EvaluationWarning, match="exactly zero"):
    assert checks.check_zero_gradients(quantized, X, Y)
  # A misclassified point where the true class ranks third has a constant DLR loss of 1:
  # not a sign of masking, so it does not count.
  third = np.asarray(jnp.argsort(-linear(X), -1)[:, 2]).astype(np.int32)
  assert checks.zero_gradient_fraction(linear, X, third) == 0.0


def test_square_beating_white_box_attacks_is_flagged():
  with pytest.warns(EvaluationWarning, match="Square"):
    assert checks.check_square({"clean": 0.9, "apgd-ce": 0.5, "apgd-t": 0.45, "square": 0.40})


def test_eps_curves_that_rise_or_stay_above_zero_are_flagged():
  with pytest.warns(EvaluationWarning, match="rose"):
    assert checks.check_eps_curve([0.1, 0.2], [0.3, 0.35], norm="linf", shape=X.shape)
  with pytest.warns(EvaluationWarning, match="covers every"):
    assert checks.check_eps_curve([0.1, 6.0], [0.3, 0.1], norm="l2", shape=X.shape)
  assert checks.box_eps("l2", X.shape) == 6.0


def test_robustness_curve_catches_gradient_masking():
  quantized = lambda x: linear(jnp.round(x * 4) / 4)
  with pytest.warns(EvaluationWarning) as record:
    curve = attacks.robustness_curve(quantized, X, Y, key=jax.random.key(0), eps_values=[0.05],
                                     attacks=("pgd-3",))
  messages = " ".join(str(w.message) for w in record)
  assert "covers every" in messages and "exactly zero" in messages
  assert list(curve) == [0.05, 1.0] and curve[1.0] > 0
  with warnings.catch_warnings():
    warnings.simplefilter("error", EvaluationWarning)
    curve = attacks.robustness_curve(linear, X, Y, key=jax.random.key(0), eps_values=[0.05],
                                     attacks=("pgd-3",))
  assert curve[1.0] == 0.0
