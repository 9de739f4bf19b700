"""Test set-up: 8 fake CPU devices (for sharding tests) and a persistent compilation cache.

Both must be configured before JAX initializes its backend, hence at import time here.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.path.dirname(__file__), "..", ".cache", "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
