r"""Plans a width study without running it: expands its grid (width × β × seed, plus WAR rows)
into runs and prints one command per run for a cluster, or estimates their cost.

  python -m launch.sweep --config configs/width_study.py --workdir runs/c10 \
      --print_commands          # one `launch.main` command per run, reference runs first
  python -m launch.sweep --config configs/width_study.py --workdir runs/c10 \
      --dry_run                 # FLOPs per run and the expected time on this machine

`launch.main` runs a study (its runs one after another, then report.md), as it runs every
job. For runs launched elsewhere, write the report with
`python -m launch.report --workdir runs/c10`.
"""
import shlex

from absl import app, flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory; runs go in subdirectories.")
_PRINT = flags.DEFINE_bool("print_commands", False, "Print one command per run and exit.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print each run's cost and exit.")
_DEVICE_COUNT = flags.DEFINE_integer(
    "device_count", None, "Devices the runs will train on, to validate the grid for with "
    "--print_commands or --dry_run (default: this machine's).")
flags.mark_flags_as_required(["config", "workdir"])


def run_commands(config_argument: str, overrides: dict, runs) -> list[str]:
  """`launch.main` commands reproducing each run: the study's config file and overrides, then
  the run's own grid point."""
  commands = []
  for run_dir, run in runs:
    point = {"job": "train", "model.width": run.model.width, "train.beta": run.train.beta,
             "seed": run.seed, "war.rule": run.war.rule}
    if run.war.reference_run:
      point["war.reference_run"] = run.war.reference_run
    arguments = [f"--config={config_argument}"] + [
        f"--config.{k}={v}" for k, v in {**overrides, **point}.items()]
    commands.append(shlex.join(["python", "-m", "launch.main", *arguments,
                                f"--workdir={run_dir}"]))
  return commands


def main(argv):
  cli.start(argv)
  if _PRINT.value == _DRY_RUN.value:
    raise app.UsageError("Give one of --print_commands or --dry_run; run the study itself "
                         "with python -m launch.main --config ... --workdir ....")
  import jax
  from robustwidth.studies import sweep
  config = _CONFIG.value
  device_count = _DEVICE_COUNT.value or jax.device_count()
  runs = sweep.validated_runs(config, _WORKDIR.value, device_count)
  print(f"# {len(runs)} runs, validated for {device_count} devices (--device_count).")
  if _PRINT.value:
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    flat = {k: v for k, v in _flatten(overrides).items()}
    print("# Runs in dependency order: adaptive WAR runs read their reference run's "
          "record.json, so start them after it finishes.")
    for command in run_commands(config_flags.get_config_filename(flags.FLAGS["config"]),
                                flat, runs):
      print(command)
  else:
    from robustwidth.studies import cost
    cost.print_estimates(runs)


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


if __name__ == "__main__":
  cli.run(main)
