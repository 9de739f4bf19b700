"""Pure, jit-able adversarial attacks on an evaluation-mode `logits_fn`."""
from robustwidth.attacks.geometry import INITS, NORMS
from robustwidth.attacks.objectives import LOSSES
from robustwidth.attacks.pgd import pgd, pgd_lipschitz_probe

__all__ = ["INITS", "LOSSES", "NORMS", "pgd", "pgd_lipschitz_probe"]
