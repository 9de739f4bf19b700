"""Expands a study configuration into single-run configurations: the width × β × seed grid
under the fixed rule, then the WAR rows (static and/or adaptive λ) for every width above the
thin reference width, each reading r0 from its reference run in the same grid."""
import copy
import os

import ml_collections

from robustwidth import config as config_lib


def run_name(config: ml_collections.ConfigDict) -> str:
  """A run's directory name, e.g. `w4_b6_s0_fixed`."""
  return f"w{config.model.width}_b{config_lib.beta(config):g}_s{config.seed}_{config.war.rule}"


def expand(study: ml_collections.ConfigDict, workdir: str
           ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(run directory, config) pairs in an order that trains every reference run first."""
  runs = []
  for seed in study.sweep.seeds:
    for beta in study.sweep.betas:
      for width in study.sweep.widths:
        runs.append(_point(study, width=width, beta=beta, seed=seed, rule="fixed"))
  for rule in study.sweep.war_rules:
    for seed in study.sweep.seeds:
      for beta in study.sweep.war_betas or study.sweep.betas:
        reference = _point(study, width=int(study.war.reference_width), beta=beta, seed=seed,
                           rule="fixed")
        for width in study.sweep.widths:
          if width > study.war.reference_width:
            run = _point(study, width=width, beta=beta, seed=seed, rule=rule)
            if rule == "adaptive" and not study.war.reference_ratio:
              run.war.reference_run = os.path.join(workdir, run_name(reference))
            runs.append(run)
  return [(os.path.join(workdir, run_name(run)), run) for run in runs]


def _point(study: ml_collections.ConfigDict, *, width: int, beta: float, seed: int,
           rule: str) -> ml_collections.ConfigDict:
  run = copy.deepcopy(study)
  run.job = "train"
  run.model.width = int(width)
  run.train.beta = float(beta)
  run.seed = int(seed)
  run.war.rule = rule
  return run


def validated_runs(study: ml_collections.ConfigDict, workdir: str, device_count: int
                   ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """`expand`, after validating the study and every run of its grid for `device_count`
  devices: a bad grid value fails before the first run starts, not when its run comes."""
  config_lib.validate(study, device_count)
  runs = expand(study, workdir)
  for run_dir, run in runs:
    try:
      config_lib.validate(run, device_count)
    except config_lib.ConfigError as error:
      raise config_lib.ConfigError(f"Run {os.path.basename(run_dir)} of the grid: {error}"
                                   ) from None
  return runs
