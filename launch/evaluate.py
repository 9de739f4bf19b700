r"""Evaluates a trained run with AutoAttack (and named attacks) and writes a RobustBench-style
JSON record.

  python -m launch.evaluate --workdir runs/x
  python -m launch.evaluate --workdir runs/x --attacks autoattack,pgd-20,cw-20 --n_examples 1000

Each comma-separated evaluation runs on its own over the first `--n_examples` test points:
"autoattack" is the standard cascade (APGD-CE, APGD-T, FAB-T, Square; its accuracy after each
component is recorded too), any other name is one attack of `robustwidth.attacks.autoattack`'s
suite (pgd-<k>, cw-<k>, apgd-ce, apgd-dlr, apgd-t, fab-t, square). Accuracies are in percent,
as RobustBench reports them. The record goes to WORKDIR/evaluation.json unless --output says
otherwise.
"""
import functools
import json
import os
import platform
import time

import flax
import jax
import numpy as np
from absl import app, flags
from jax.tree_util import Partial

from launch import cli
import robustwidth
from robustwidth import attacks, data, models, train
from robustwidth import config as config_lib
from robustwidth.attacks.autoattack import check_attack_names

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_ATTACKS = flags.DEFINE_list("attacks", ["autoattack"],
                             "Evaluations: autoattack and/or named attacks (pgd-20, cw-20, ...).")
_N_EXAMPLES = flags.DEFINE_integer("n_examples", None,
                                   "Evaluate the first N test points (default: all).")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint.")
_EPS = flags.DEFINE_float("eps", None, "Override the run's config.attack.eps.")
_NORM = flags.DEFINE_enum("norm", None, ["linf", "l2"], "Override the run's config.attack.norm.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per attack batch.")
_SEED = flags.DEFINE_integer("seed", None, "Attack seed (default: the run's config.seed).")
_OUTPUT = flags.DEFINE_string("output", None, "Record path (default WORKDIR/evaluation.json).")
flags.mark_flags_as_required(["workdir"])


def _eval_apply(graphdef, params, model_state, x):
  return models.apply(graphdef, params, model_state, x, train=False)[0]


def _percent(fraction: float) -> float:
  return round(100.0 * fraction, 2)


def evaluate(workdir: str, *, evaluations, n_examples=None, which="best", eps=None, norm=None,
             batch_size=256, seed=None) -> dict:
  """Runs the evaluations on the run's checkpoint; returns the record (see the module doc)."""
  graphdef, params, model_state, config = train.restore_model(workdir, which)
  # The checkpoint comes back replicated over the trainer's mesh; the attacks run on the
  # default device.
  params, model_state = jax.device_get((params, model_state))
  eps = config.attack.eps if eps is None else eps
  norm = config.attack.norm if norm is None else norm
  seed = config.seed if seed is None else seed
  split = data.load(config.data.name, "test", data_dir=config.data.data_dir)
  n = len(split) if n_examples is None else n_examples
  if not 0 < n <= len(split):
    raise ValueError(f"--n_examples must lie in [1, {len(split)}] (the test split's size), "
                     f"got {n}.")
  x, y = data.to_float(split.images[:n]), split.labels[:n]
  # A Partial keeps the parameters out of the compiled attacks' constants.
  logits_fn = Partial(functools.partial(_eval_apply, graphdef), params, model_state)
  key = jax.random.key(seed)

  results, robust_flags, stability = {}, None, None
  for name in evaluations:
    start = time.perf_counter()
    if name == "autoattack":
      x_adv, report = attacks.autoattack(logits_fn, x, y, key=key, eps=eps, norm=norm,
                                         batch_size=batch_size)
    else:
      x_adv, report = attacks.autoattack(logits_fn, x, y, key=key, eps=eps, norm=norm,
                                         version="custom", attacks=[name],
                                         batch_size=batch_size)
    results[name] = dict(
        robust_acc=_percent(report["robust_accuracy"]),
        perturbation_stability=_percent(report["perturbation_stability"]),
        accuracy_after={k: _percent(v) for k, v in report["accuracy_after"].items()},
        seconds={k: round(v, 2) for k, v in report["seconds"].items()},
        wall_seconds=round(time.perf_counter() - start, 2), settings=report["settings"],
        max_perturbation=report["max_perturbation"], counts=report["counts"])
    robust_flags = report["robust"] if robust_flags is None else robust_flags & report["robust"]
    if stability is None or name == "autoattack":
      stability = report["perturbation_stability"]
    clean = report["clean_accuracy"]

  record = dict(
      model=f"WideResNet-{config.model.depth}-{config.model.width}"
      if config.model.family == "wide_resnet" else
      f"{config.model.family}-{config.model.depth}-{config.model.width}",
      family=config.model.family, depth=config.model.depth, width=config.model.width,
      base_channels=config.model.base_channels, params=models.count_params(params),
      dataset=config.data.name, split="test", n_examples=n, norm=norm, eps=eps,
      clean_acc=_percent(clean),
      autoattack_acc=results["autoattack"]["robust_acc"] if "autoattack" in results else None,
      per_attack_acc=(results["autoattack"]["accuracy_after"] if "autoattack" in results
                      else {k: v["robust_acc"] for k, v in results.items()}),
      worst_case_acc=_percent(float(np.mean(robust_flags))),
      perturbation_stability=_percent(stability),
      evaluations=results, seed=seed, checkpoint=which, workdir=os.path.abspath(workdir),
      training=dict(method=config.train.method, beta=config_lib.beta(config),
                    train_eps=config.attack.eps, train_norm=config.attack.norm),
      versions=dict(robustwidth=robustwidth.__version__, jax=jax.__version__,
                    flax=flax.__version__, numpy=np.__version__,
                    python=platform.python_version()),
      device=jax.devices()[0].device_kind)
  return record


def main(argv):
  cli.start(argv)
  evaluations = [name.strip() for name in _ATTACKS.value if name.strip()]
  if not evaluations:
    raise app.UsageError("--attacks is empty; use e.g. --attacks autoattack,pgd-20,cw-20.")
  check_attack_names([name for name in evaluations if name != "autoattack"])
  record = evaluate(_WORKDIR.value, evaluations=evaluations, n_examples=_N_EXAMPLES.value,
                    which=_WHICH.value, eps=_EPS.value, norm=_NORM.value,
                    batch_size=_BATCH_SIZE.value, seed=_SEED.value)
  output = _OUTPUT.value or os.path.join(_WORKDIR.value, "evaluation.json")
  with open(output, "w") as f:
    json.dump(record, f, indent=1, default=float)
  print(f"{record['model']} on {record['dataset']} ({record['n_examples']} test points), "
        f"{record['norm']} eps={record['eps']:g}: clean {record['clean_acc']:.2f}%")
  for name, result in record["evaluations"].items():
    steps = ", ".join(f"{k} {v:.2f}%" for k, v in result["accuracy_after"].items()
                      if k != "clean")
    print(f"  {name}: {result['robust_acc']:.2f}%  ({steps}; {result['wall_seconds']:.1f} s)")
  print(f"  worst case over all: {record['worst_case_acc']:.2f}%; record: {output}")


if __name__ == "__main__":
  app.run(main)
