"""Pure, jit-able adversarial attacks on an evaluation-mode `logits_fn`."""
from robustwidth.attacks import checks
from robustwidth.attacks.apgd import apgd, apgd_targeted
from robustwidth.attacks.autoattack import PLUS, RAND, STANDARD, autoattack, robustness_curve
from robustwidth.attacks.checks import EvaluationWarning
from robustwidth.attacks.fab import fab, fab_targeted
from robustwidth.attacks.geometry import INITS, NORMS
from robustwidth.attacks.objectives import LOSSES
from robustwidth.attacks.pgd import pgd, pgd_lipschitz_probe
from robustwidth.attacks.square import square

__all__ = ["EvaluationWarning", "INITS", "LOSSES", "NORMS", "PLUS", "RAND", "STANDARD", "apgd",
           "apgd_targeted", "autoattack", "checks", "fab", "fab_targeted", "pgd",
           "pgd_lipschitz_probe", "robustness_curve", "square"]
