r"""Evaluates a trained run, or a PyTorch checkpoint of a RobustBench architecture, with
AutoAttack (and named attacks) and writes a RobustBench-style JSON record.

  python -m launch.evaluate --workdir runs/x
  python -m launch.evaluate --workdir runs/x --attacks autoattack,pgd-20,cw-20 --n_examples 1000
  python -m launch.evaluate --torch_checkpoint model.pt --arch preact_resnet18 \
      --dataset cifar10 --attacks autoattack,pgd-20 --output record.json

A PyTorch checkpoint (a state_dict, or a dict holding one under "state_dict" or
"model_state_dict") is read with `torch.load(..., weights_only=True)`, so no code stored in the
file runs; --arch names its layout (`robustwidth.interop.ARCHITECTURES`), and --input_mean /
--input_std the per-channel normalization the model applies to its [0, 1] inputs, if any. Its
threat model defaults to RobustBench's: ℓ∞ ε = 8/255 (ℓ2 0.5; ℓ1 12, Croce & Hein 2021).

Each comma-separated evaluation runs on its own over the first `--n_examples` test points:
"autoattack" is the standard cascade (APGD-CE, APGD-T, FAB-T, Square; its accuracy after each
component is recorded too), any other name is one attack of `robustwidth.attacks.autoattack`'s
suite (pgd-<k>, cw-<k>, apgd-ce, apgd-dlr, apgd-t, fab-t, square). Accuracies are in percent,
as RobustBench reports them. The record goes to WORKDIR/evaluation.json unless --output says
otherwise (a checkpoint's record needs --output).
"""
import json
import os
import platform
import time

import flax
import jax
import numpy as np
from absl import app, flags

from launch import cli
import robustwidth
from robustwidth import attacks, data, evaluation, interop, models
from robustwidth import config as config_lib
from robustwidth.attacks.autoattack import check_attack_names

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_TORCH_CHECKPOINT = flags.DEFINE_string(
    "torch_checkpoint", None, "A PyTorch checkpoint to evaluate instead of a run (read with "
    "weights_only=True).")
_ARCH = flags.DEFINE_enum("arch", None, list(interop.ARCHITECTURES),
                          "The checkpoint's architecture.")
_DATASET = flags.DEFINE_enum("dataset", None, list(data.DATASETS),
                             "The checkpoint's test data set.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory for CIFAR.")
_INPUT_MEAN = flags.DEFINE_list("input_mean", None, "Per-channel mean the model subtracts.")
_INPUT_STD = flags.DEFINE_list("input_std", None, "Per-channel std the model divides by.")
_ATTACKS = flags.DEFINE_list("attacks", ["autoattack"],
                             "Evaluations: autoattack and/or named attacks (pgd-20, cw-20, ...).")
_N_EXAMPLES = flags.DEFINE_integer("n_examples", None,
                                   "Evaluate the first N test points (default: all).")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint.")
_EPS = flags.DEFINE_float("eps", None, "Override the run's config.attack.eps.")
_NORM = flags.DEFINE_enum("norm", None, list(attacks.NORMS),
                          "Override the run's config.attack.norm.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per attack batch.")
_SEED = flags.DEFINE_integer("seed", None, "Attack seed (default: the run's config.seed).")
_OUTPUT = flags.DEFINE_string("output", None, "Record path (default WORKDIR/evaluation.json).")
CHECKPOINT_EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 12.0}


def _percent(fraction: float) -> float:
  return round(100.0 * fraction, 2)


def evaluate(workdir: str, *, evaluations, n_examples=None, which="best", eps=None, norm=None,
             batch_size=256, seed=None) -> dict:
  """Runs the evaluations on the run's checkpoint; returns the record (see the module doc)."""
  graphdef, params, model_state, config = evaluation.restore_model(workdir, which)
  eps = config.attack.eps if eps is None else eps
  norm = config.attack.norm if norm is None else norm
  seed = config.seed if seed is None else seed
  x, y = _test_points(config.data.name, config.data.data_dir, n_examples)
  logits_fn = models.logits_fn(graphdef, params, model_state)
  summary = _run_evaluations(logits_fn, x, y, evaluations=evaluations, eps=eps, norm=norm,
                             key=jax.random.key(seed), batch_size=batch_size)

  record = dict(
      model=f"WideResNet-{config.model.depth}-{config.model.width}"
      if config.model.family == "wide_resnet" else
      f"{config.model.family}-{config.model.depth}-{config.model.width}",
      family=config.model.family, depth=config.model.depth, width=config.model.width,
      base_channels=config.model.base_channels, params=models.count_params(params),
      dataset=config.data.name, split="test", n_examples=len(x), norm=norm, eps=eps,
      **summary, seed=seed, checkpoint=which, workdir=os.path.abspath(workdir),
      training=dict(method=config.train.method, beta=config_lib.beta(config),
                    train_eps=config.attack.eps, train_norm=config.attack.norm),
      versions=_versions(), device=jax.devices()[0].device_kind)
  return record


def _test_points(name, data_dir, n_examples):
  split = data.load(name, "test", data_dir=data_dir)
  n = len(split) if n_examples is None else n_examples
  if not 0 < n <= len(split):
    raise ValueError(f"--n_examples must lie in [1, {len(split)}] (the test split's size), "
                     f"got {n}.")
  return data.to_float(split.images[:n]), split.labels[:n]


def evaluate_torch_checkpoint(path: str, *, arch: str, dataset: str, evaluations,
                              n_examples=None, eps=None, norm="linf", batch_size=256, seed=0,
                              data_dir=None, mean=None, std=None) -> dict:
  """Runs the evaluations on a PyTorch checkpoint of `arch` (read with weights_only=True, see
  `robustwidth.interop`); returns the record (see the module doc)."""
  model = interop.load_torch_checkpoint(path, arch=arch, mean=mean, std=std)
  graphdef, params, model_state = models.split(model)
  eps = CHECKPOINT_EPS[norm] if eps is None else eps
  x, y = _test_points(dataset, data_dir, n_examples)
  logits_fn = models.logits_fn(graphdef, params, model_state)
  summary = _run_evaluations(logits_fn, x, y, evaluations=evaluations, eps=eps, norm=norm,
                             key=jax.random.key(seed), batch_size=batch_size)
  return dict(
      model=interop.model_name(model), family=arch, params=models.count_params(params),
      dataset=dataset, split="test", n_examples=len(x), norm=norm, eps=eps, **summary,
      seed=seed, checkpoint=os.path.abspath(path),
      input_normalization=None if mean is None else dict(mean=list(mean), std=list(std)),
      versions=_versions(), device=jax.devices()[0].device_kind)


def _versions() -> dict:
  return dict(robustwidth=robustwidth.__version__, jax=jax.__version__,
              flax=flax.__version__, numpy=np.__version__, python=platform.python_version())


def _run_evaluations(logits_fn, x, y, *, evaluations, eps, norm, key, batch_size) -> dict:
  """Each evaluation on its own: the record's accuracy fields and per-evaluation results."""
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

  return dict(
      clean_acc=_percent(clean),
      autoattack_acc=results["autoattack"]["robust_acc"] if "autoattack" in results else None,
      per_attack_acc=(results["autoattack"]["accuracy_after"] if "autoattack" in results
                      else {k: v["robust_acc"] for k, v in results.items()}),
      worst_case_acc=_percent(float(np.mean(robust_flags))),
      perturbation_stability=_percent(stability), evaluations=results)


def check_paths(output: str, *, workdir: str | None = None,
                checkpoint: str | None = None) -> None:
  """Fails before any attack runs if the run directory or checkpoint file is missing or the
  record could not be written."""
  if workdir is not None and not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir {workdir} is not a directory; give a trained run's "
                            "directory.")
  if checkpoint is not None and not os.path.isfile(checkpoint):
    raise FileNotFoundError(f"--torch_checkpoint {checkpoint} is not a file; give the path "
                            "of a PyTorch state_dict.")
  directory = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"--output {output}: the directory {directory} does not exist; "
                            "create it first or choose another path.")
  if os.path.isdir(output) or not os.access(directory, os.W_OK):
    raise PermissionError(f"--output {output} cannot be written; choose a file path in a "
                          "writable directory.")


def main(argv):
  cli.start(argv)
  evaluations = [name.strip() for name in _ATTACKS.value if name.strip()]
  if not evaluations:
    raise app.UsageError("--attacks is empty; use e.g. --attacks autoattack,pgd-20,cw-20.")
  check_attack_names([name for name in evaluations if name != "autoattack"])
  if (_WORKDIR.value is None) == (_TORCH_CHECKPOINT.value is None):
    raise app.UsageError("Give either --workdir (a trained run) or --torch_checkpoint.")
  if _WORKDIR.value is not None:
    output = _OUTPUT.value or os.path.join(_WORKDIR.value, "evaluation.json")
    check_paths(output, workdir=_WORKDIR.value)
    record = evaluate(_WORKDIR.value, evaluations=evaluations, n_examples=_N_EXAMPLES.value,
                      which=_WHICH.value, eps=_EPS.value, norm=_NORM.value,
                      batch_size=_BATCH_SIZE.value, seed=_SEED.value)
  else:
    if not (_ARCH.value and _DATASET.value and _OUTPUT.value):
      raise app.UsageError("--torch_checkpoint needs --arch, --dataset and --output.")
    output = _OUTPUT.value
    check_paths(output, checkpoint=_TORCH_CHECKPOINT.value)
    mean = None if _INPUT_MEAN.value is None else [float(v) for v in _INPUT_MEAN.value]
    std = None if _INPUT_STD.value is None else [float(v) for v in _INPUT_STD.value]
    record = evaluate_torch_checkpoint(
        _TORCH_CHECKPOINT.value, arch=_ARCH.value, dataset=_DATASET.value,
        evaluations=evaluations, n_examples=_N_EXAMPLES.value, eps=_EPS.value,
        norm=_NORM.value or "linf", batch_size=_BATCH_SIZE.value, seed=_SEED.value or 0,
        data_dir=_DATA_DIR.value, mean=mean, std=std)
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
  cli.run(main)
