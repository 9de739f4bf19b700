"""Pure, jit-able adversarial attacks on an evaluation-mode `logits_fn` (a `LogitsFn`).

  logits_fn = models.logits_fn(graphdef, params, model_state)
  x_adv = attacks.pgd(logits_fn, x, y, key=jax.random.key(0), eps=8 / 255, step_size=2 / 255,
                      num_steps=10, loss="margin")
  x_adv, report = attacks.autoattack(logits_fn, x, y, key=jax.random.key(0), eps=8 / 255)
"""
from robustwidth.attacks import checks
from robustwidth.attacks.apgd import apgd, apgd_targeted
from robustwidth.attacks.autoattack import PLUS, RAND, STANDARD, autoattack, robustness_curve
from robustwidth.attacks.checks import EvaluationWarning
from robustwidth.attacks.components import LogitsFn
from robustwidth.attacks.fab import fab, fab_targeted
from robustwidth.attacks.geometry import INITS, NORMS
from robustwidth.attacks.objectives import LOSSES
from robustwidth.attacks.pgd import pgd, pgd_with_gradient_max
from robustwidth.attacks.square import square

__all__ = ["EvaluationWarning", "INITS", "LOSSES", "LogitsFn", "NORMS", "PLUS", "RAND",
           "STANDARD", "apgd", "apgd_targeted", "autoattack", "checks", "fab", "fab_targeted",
           "pgd", "pgd_with_gradient_max", "robustness_curve", "square"]
