"""The width study (the main job): trains every run of the sweep, one after another, reusing
finished runs, then writes the study's report into the workdir."""
import os

import jax
import ml_collections

from robustwidth import config as config_lib
from robustwidth import train
from robustwidth.studies import report, sweep


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  config_lib.validate(config, jax.device_count())
  runs = sweep.expand(config)
  for index, run_config in enumerate(runs):
    name = sweep.run_name(run_config)
    if jax.process_index() == 0:
      print(f"[{index + 1}/{len(runs)}] {name}", flush=True)
    train.train_and_evaluate(run_config, os.path.join(workdir, name))
  if jax.process_index() == 0:
    path = report.write(workdir)
    print(f"Report: {path}", flush=True)
