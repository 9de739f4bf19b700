"""robustwidth: adversarial robustness as a function of network width, in JAX/Flax.

Pure functions first (attacks, losses, metrics, lipschitz, ntk, war), thin stateful shells
around them (train, checkpointing, logging). See README.md.
"""
from robustwidth import attacks, lipschitz, losses, metrics, models, ntk, war

__version__ = "0.1.0"
__all__ = ["attacks", "lipschitz", "losses", "metrics", "models", "ntk", "war"]
