"""The XLA:CPU crash workaround: set on import, never over the user's choice, and it holds."""
import os
import subprocess
import sys

import pytest

from robustwidth import xla_cpu

# A WideResNet-16-4's evaluation-mode forward pass, twice in one jit: without the workaround
# XLA:CPU (jaxlib 0.10.2) crashed on this in every run tried (segfault or glibc abort).
CRASHED_WITHOUT_WORKAROUND = """
import robustwidth, jax
from robustwidth import config, models, train
c = config.base()
c.model.family, c.model.depth, c.model.width = "wide_resnet", 16, 4
graphdef, params, state = models.split(train.build_model(c, (32, 32, 3), 10))
f = models.logits_fn(graphdef, params, state)
x = jax.random.uniform(jax.random.PRNGKey(0), (8, 32, 32, 3))
print(jax.block_until_ready(jax.jit(lambda x: f(x) + f(x * 0.5))(x)).shape)
"""


def test_importing_robustwidth_prevents_the_wide_resnet_crash():
  flags = os.environ.get("XLA_FLAGS", "").replace(xla_cpu.WORKAROUND, "")
  env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", CRASHED_WITHOUT_WORKAROUND], env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "(8, 10)" in result.stdout


def test_workaround_is_added_once_and_never_over_the_users_choice(monkeypatch):
  monkeypatch.setattr(xla_cpu, "_backends_started", lambda: False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  xla_cpu.avoid_reduce_fusion_crash()
  xla_cpu.avoid_reduce_fusion_crash()
  assert os.environ["XLA_FLAGS"] == (
      f"--xla_force_host_platform_device_count=2 {xla_cpu.WORKAROUND}")
  mine = f"{xla_cpu.FUSION_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
  monkeypatch.setenv("XLA_FLAGS", mine)
  xla_cpu.avoid_reduce_fusion_crash()
  assert os.environ["XLA_FLAGS"] == mine


def test_too_late_to_set_the_flag_warns_and_changes_nothing(monkeypatch):
  monkeypatch.setattr(xla_cpu, "_backends_started", lambda: True)
  monkeypatch.setenv("XLA_FLAGS", "")
  with pytest.warns(UserWarning, match="Import robustwidth first"):
    xla_cpu.avoid_reduce_fusion_crash()
  assert os.environ["XLA_FLAGS"] == ""
