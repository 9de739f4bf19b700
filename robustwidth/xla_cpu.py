"""The XLA:CPU setting robustwidth needs, applied when the package is imported.

jaxlib 0.10's XLA:CPU fuses a deep convolution stack that ends in a reduction (a network's
global average pool) into one YNNPACK "reduce" library fusion, and running that fusion
corrupts memory: a jitted evaluation-mode forward pass of a WideResNet-16-4 dies with a
segfault or glibc's "free(): invalid pointer" (AutoAttack's clean pass among others). Turning
that one fusion type off avoids it. XLA reads XLA_FLAGS once, when JAX starts its CPU backend,
so the flag goes in before the first computation; a flag the user set for these fusions wins.
"""
import os
import warnings

import jax

FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
WORKAROUND = f"{FUSION_FLAG}=-LIBRARY_FUSION_TYPE_REDUCE"
AFFECTED_JAX = "0.10."


def _backends_started() -> bool:
  # JAX has no public query for this; the private one is read defensively.
  from jax._src import xla_bridge
  return getattr(xla_bridge, "backends_are_initialized", lambda: False)()


def avoid_reduce_fusion_crash() -> None:
  """Adds WORKAROUND to XLA_FLAGS on the affected JAX series unless the user already chose
  these fusions; warns when JAX has already started and the flag can no longer act."""
  flags = os.environ.get("XLA_FLAGS", "")
  if not jax.__version__.startswith(AFFECTED_JAX) or FUSION_FLAG in flags:
    return
  if _backends_started():
    warnings.warn(f"JAX started before robustwidth was imported, so XLA_FLAGS lacks "
                  f"{WORKAROUND}; without it XLA:CPU can crash running WideResNets. Import "
                  f"robustwidth first, or set XLA_FLAGS={WORKAROUND} yourself.", stacklevel=3)
    return
  os.environ["XLA_FLAGS"] = f"{flags} {WORKAROUND}".strip()
