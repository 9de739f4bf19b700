"""Wall time and robust accuracy of standard ℓ∞ AutoAttack, robustwidth against the reference
PyTorch implementation (fra31/auto-attack) on the same weights.

    python -m bench.autoattack --depth 16 --width 4 --image-size 32 --n-examples 500 \\
        --batch 500 --reference-path /path/to/auto-attack
    python -m bench.autoattack --workdir RUN --n-examples 360     # a trained digits run

Both run the standard cascade (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries), each attack
on the examples still robust after the ones before it. The default model is a randomly
initialised WideResNet on random images labelled with its own predictions, so that every
example is attacked (`accuracy_after` shows how many each attack had left: if the random
model loses them all early, lower `--eps`, or the later attacks time nothing); `--workdir`
takes a trained run's best checkpoint and the digits test set instead. The PyTorch model is
`robustwidth.interop`'s, loaded with `to_torch_state_dict`. The reference is imported from
`--reference-path` (a checkout of fra31/auto-attack) or as the installed `autoattack`
package, and never copied here. Prints JSON lines: one per implementation (total and
per-attack seconds, accuracy after each attack; `cold_s` is the first call, robustwidth's
compilation included) and one comparing total wall time.
"""
import argparse
import importlib
import re
import statistics
import sys
import time

import jax
import numpy as np
import torch
from flax import nnx

from bench import harness
from robustwidth import attacks, data, evaluation, experiment, interop, models

BENCH = "autoattack"
REFERENCE_URL = "git+https://github.com/fra31/auto-attack"


def reference_class(path: str | None):
  """The reference's `AutoAttack` class, from `path` or the installed package; None (with a
  message saying how to get it) when neither has it."""
  if path:
    sys.path.insert(0, path)
  try:
    return importlib.import_module("autoattack").AutoAttack
  except ImportError:
    where = f"in {path}" if path else "installed"
    print(f"bench.autoattack: no reference AutoAttack {where}; skipping PyTorch. Get it with "
          f"`pip install {REFERENCE_URL}` or pass --reference-path to a checkout of it.",
          file=sys.stderr)
    return None


class ReferenceLog:
  """Stands in for the reference's logger: instead of printing, keeps the accuracy after each
  attack and the seconds between its accuracy messages (the initial one, then one after each
  attack), which gives per-attack times without changing its code."""
  _INITIAL = re.compile(r"initial accuracy: ([\d.]+)%")
  _AFTER = re.compile(r"robust accuracy after (\S+): ([\d.]+)%")

  def __init__(self):
    self.accuracy, self.seconds, self._last = {}, {}, None

  def log(self, message: str) -> None:
    now = time.perf_counter()
    initial, after = self._INITIAL.match(message), self._AFTER.match(message)
    if initial:
      self.accuracy, self.seconds, self._last = {"clean": float(initial[1]) / 100}, {}, now
    elif after:
      name = after[1].lower()
      self.accuracy[name] = float(after[2]) / 100
      self.seconds[name], self._last = now - self._last, now


def problem(args):
  """(graphdef, params, model_state, config, x, y): the model and the examples to attack."""
  if args.workdir:
    graphdef, params, model_state, config = evaluation.restore_model(args.workdir, "best")
    # The checkpoint comes back replicated over the trainer's mesh.
    params, model_state = jax.device_get((params, model_state))
    split = data.load("digits", "test")
    x, y = data.to_float(split.images[:args.n_examples]), split.labels[:args.n_examples]
    return graphdef, params, model_state, config, x.astype(np.float32), y.astype(np.int32)
  config = harness.config_for(args)
  shape = (args.image_size, args.image_size, args.channels)
  graphdef, params, model_state = models.split(experiment.create_model(config, shape, 10))
  x = np.random.default_rng(0).random((args.n_examples, *shape), dtype=np.float32)
  # Labelled with the model's own predictions: every example is clean-correct and attacked.
  y = np.asarray(models.logits_fn(graphdef, params, model_state)(x).argmax(-1), np.int32)
  return graphdef, params, model_state, config, x, y


def torch_model(graphdef, params, model_state, config, channels, device):
  """The PyTorch WideResNet with the same weights, through `robustwidth.interop`."""
  model = interop.torch_model("wide_resnet", 10, depth=config.model.depth,
                              width=config.model.width, in_channels=channels,
                              base_channels=config.model.base_channels)
  model.load_state_dict(interop.to_torch_state_dict(nnx.merge(graphdef, params, model_state)))
  return model.eval().to(device)


def _median_seconds(runs: list[dict]) -> dict:
  return {name: round(statistics.median(run[name] for run in runs), 3) for name in runs[0]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  harness.model_arguments(parser, batch=256)
  parser.set_defaults(depth=10, width=1, image_size=16, repeats=2)
  parser.add_argument("--n-examples", type=int, default=32)
  parser.add_argument("--eps", type=float, default=None,
                      help="ℓ∞ radius (default: the run's config.attack.eps, else 0.031)")
  parser.add_argument("--seed", type=int, default=0, help="both attacks' seed")
  parser.add_argument("--workdir", default=None,
                      help="a trained run (WideResNet on digits) whose best checkpoint to attack; "
                           "overrides the architecture flags")
  parser.add_argument("--reference-path", default=None,
                      help="a checkout of fra31/auto-attack (default: the installed package)")
  parser.add_argument("--square-queries", type=int, default=5000,
                      help="Square's query budget on both sides; the standard attack has 5000, "
                           "fewer only for smoke runs")
  args = parser.parse_args(argv)
  if args.dtype != "float32":
    parser.error("AutoAttack is benchmarked in float32, as the reference runs it.")
  if args.loop is not False:
    parser.error("AutoAttack's loops are rolled; --loop applies to the PGD benchmarks.")
  harness.configure_threads(args)
  device = harness.torch_device()
  graphdef, params, model_state, config, x, y = problem(args)
  eps = config.attack.eps if args.eps is None else args.eps
  machine = harness.machine()
  # The standard version reads Square's budget from this module constant.
  importlib.import_module("robustwidth.attacks.autoattack").NUM_QUERIES = args.square_queries
  logits_fn = models.logits_fn(graphdef, params, model_state)
  key = jax.random.key(args.seed)
  runs = {"robustwidth": []}

  def robustwidth_run():
    start = time.perf_counter()
    _, report = attacks.autoattack(logits_fn, x, y, key=key, eps=eps, batch_size=args.batch)
    runs["robustwidth"].append((time.perf_counter() - start, report["seconds"],
                                report["accuracy_after"]))

  runners = {"robustwidth": robustwidth_run}
  reference = None if args.skip_torch else reference_class(args.reference_path)
  gap = None
  if reference is not None:
    if config.model.family != "wide_resnet":
      parser.error(f"The PyTorch side needs a WideResNet, not {config.model.family}; "
                   "pass --skip-torch.")
    model = torch_model(graphdef, params, model_state, config, x.shape[-1], device)
    # Contiguous NCHW, as the reference expects (it views gradients as [N, -1]).
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
    y_torch = torch.from_numpy(y.astype(np.int64)).to(device)
    gap = harness.logits_gap(graphdef, params, model_state, model, x, x_torch)
    adversary = reference(model, norm="Linf", eps=eps, version="standard", seed=args.seed,
                          device=device, verbose=False)
    adversary.verbose, adversary.logger = True, ReferenceLog()
    adversary.square.n_queries = args.square_queries
    runs["pytorch"] = []

    def torch_run():
      start = time.perf_counter()
      adversary.run_standard_evaluation(x_torch, y_torch, bs=args.batch)
      harness.torch_sync(device)
      total = time.perf_counter() - start
      log = adversary.logger
      # The reference stops once no example is left: the attacks after that took no time.
      for name in attacks.STANDARD:
        log.seconds.setdefault(name, 0.0)
        log.accuracy.setdefault(name, list(log.accuracy.values())[-1])
      runs["pytorch"].append((total, dict(log.seconds), dict(log.accuracy)))

    runners["pytorch"] = torch_run
  times = harness.alternate(runners, args.repeats)
  common = {"bench": BENCH, "family": config.model.family, "depth": config.model.depth,
            "width": config.model.width, "base_channels": config.model.base_channels,
            "image_shape": list(x.shape[1:]),
            "data": "digits" if args.workdir else "random", "n_examples": len(x), "eps": eps,
            "square_queries": args.square_queries, "batch": args.batch, "logits_gap": gap,
            **machine}
  extra = {}
  for name, results in runs.items():
    (cold_total, cold_seconds, _), timed = results[0], results[1:]
    extra[name] = {"attack_s": _median_seconds([seconds for _, seconds, _ in timed]),
                   "accuracy_after": timed[-1][2], "cold_s": round(cold_total, 2),
                   "cold_attack_s": {k: round(v, 2) for k, v in cold_seconds.items()}}
  extra["robustwidth"].update(loop=harness.describe_loop(args.loop), **harness.jax_memory())
  if "pytorch" in extra:
    extra["pytorch"].update(harness.torch_memory(device))
  harness.report(common, times, len(x), None, None, extra)


if __name__ == "__main__":
  main()
