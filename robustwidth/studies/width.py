"""The width study (the main job): trains every run of the sweep, one after another, reusing
finished runs, then writes the study's report into the workdir."""
import os

import jax
import ml_collections

from robustwidth import train
from robustwidth.studies import report, sweep


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  runs = sweep.validated_runs(config, workdir, jax.device_count())
  for index, (run_dir, run_config) in enumerate(runs):
    if jax.process_index() == 0:
      print(f"[{index + 1}/{len(runs)}] {os.path.basename(run_dir)}", flush=True)
    train.train_and_evaluate(run_config, run_dir)
  if jax.process_index() == 0:
    path = report.write(workdir)
    print(f"Report: {path}", flush=True)
