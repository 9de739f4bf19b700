r"""Runs one configured job: a training run, a width study or the NTK width study.

  python -m launch.main --config configs/default.py --workdir runs/default
  python -m launch.main --config configs/trades.py:width=10 --workdir runs/x \
      --config.train.beta=9

Multi-host (one process per host, every host runs the same command): add --distributed, and
on hosts where JAX cannot discover the cluster (not on Cloud TPU or SLURM) also
--coordinator_address=HOST:PORT --num_processes=N --process_id=I. See launch/multihost.sh.
"""
import os

import jax
from absl import app, flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Initialize JAX's multi-process runtime first.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (with --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes (with --distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process (with --distributed).")
flags.mark_flags_as_required(["config", "workdir"])


def run_job(config, workdir: str) -> None:
  """Dispatches on `config.job`."""
  if config.job == "train":
    from robustwidth import train
    train.train_and_evaluate(config, workdir)
  elif config.job == "width_study":
    from robustwidth.studies import width
    width.run(config, workdir)
  elif config.job == "ntk_width":
    from robustwidth.studies import ntk_width
    ntk_width.run(config, workdir)
  else:
    raise app.UsageError(f"Unknown config.job {config.job!r}; use train, width_study or "
                         "ntk_width.")


def main(argv):
  cli.start(argv)
  if not jax.config.jax_compilation_cache_dir:  # Reruns and resumed runs skip compilation.
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser("~/.cache/robustwidth/jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  if _DISTRIBUTED.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  run_job(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
