"""Expands a study configuration's grid (width × β × seed) into single-run configurations."""
import copy

import ml_collections


def run_name(config: ml_collections.ConfigDict) -> str:
  """A run's directory name, e.g. `w4_b6_s0_fixed`."""
  return (f"w{config.model.width}_b{config.train.beta:g}_s{config.seed}_{config.war.rule}")


def expand(study: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One `job="train"` config per grid point, widths innermost, in the order to run them."""
  runs = []
  for seed in study.sweep.seeds:
    for beta in study.sweep.betas:
      for width in study.sweep.widths:
        runs.append(_point(study, width=width, beta=beta, seed=seed))
  return runs


def _point(study: ml_collections.ConfigDict, *, width: int, beta: float, seed: int
           ) -> ml_collections.ConfigDict:
  run = copy.deepcopy(study)
  run.job = "train"
  run.model.width = int(width)
  run.train.beta = float(beta)
  run.seed = int(seed)
  return run
