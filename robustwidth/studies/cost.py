"""Cost estimates before runs start (`launch.sweep --dry_run`): FLOPs from XLA's cost analysis
of the fully unrolled train and eval steps (a rolled loop's body would be counted once), times
the images a run processes, and the expected time at the FLOP rate measured on this machine.

AutoAttack's cascade depends on the model, so its FLOPs are an assumption: each of
`eval.autoattack_examples` points costs AUTOATTACK_PASSES of the eval attack's forward-backward
passes (APGD-CE's 100 on every point; APGD-T's 900, FAB-T's 900 at about two passes each and
Square's 5,000 forward passes at about a third of one, on the half assumed still robust).
"""
import copy
import dataclasses
import time

import jax
import jax.numpy as jnp

from robustwidth import config as config_lib
from robustwidth import data, experiment, models, steps

AUTOATTACK_PASSES = 100 + 0.5 * (900 + 2 * 900 + 5000 / 3)


def _lowered_steps(config):
  """Lowered (not compiled) train and eval steps of a run on abstract values; also the
  parameter count and the train step's abstract arguments."""
  config = copy.deepcopy(config)
  config.war.rule = "fixed"  # The λ rule does not change the FLOPs.
  spec = experiment.spec_from_info(config)
  graphdef, params, _ = experiment.abstract_model(config, spec)
  state = experiment.abstract_train_state(config, spec)
  batch = experiment.batch_spec(config.train.batch_size, spec.image_shape)
  eval_batch = experiment.batch_spec(config.eval.batch_size, spec.image_shape, mask=True)
  settings = experiment.train_settings(config, spec)
  unrolled = lambda attack: dataclasses.replace(attack, unroll=True)  # each step counted
  if settings.attack is not None:
    settings = dataclasses.replace(settings, attack=unrolled(settings.attack))
  train_step = jax.jit(steps.make_train_step(
      graphdef, experiment.optimizer(config, spec), settings)).lower(state, batch)
  eval_step = jax.jit(steps.make_eval_step(graphdef, unrolled(experiment.eval_attack(config)))
                      ).lower(state.params, state.model_state, eval_batch, jax.random.PRNGKey(0))
  return train_step, eval_step, models.count_params(params), (state, batch)


def run_flops(config) -> dict:
  """Training and evaluation FLOPs of one whole run."""
  train_step, eval_step, params, _ = _lowered_steps(config)
  steps_per_epoch = experiment.spec_from_info(config).steps_per_epoch
  num_test = data.INFO[config.data.name][3]
  evaluations = config.train.epochs // config.eval.every_epochs + (
      config.train.epochs % config.eval.every_epochs != 0)
  eval_batches = -(-num_test // config.eval.batch_size)
  eval_flops = eval_step.cost_analysis()["flops"]
  pass_flops = eval_flops / (config.eval.batch_size * (config.eval.num_steps + 1))
  return {
      "params": params,
      "train_flops": train_step.cost_analysis()["flops"] * steps_per_epoch * config.train.epochs,
      "eval_flops": eval_flops * eval_batches * evaluations,
      "autoattack_flops": pass_flops * AUTOATTACK_PASSES * config.eval.autoattack_examples,
  }


def measured_flop_rate() -> tuple[float, str]:
  """FLOP/s this machine reaches on a TRADES step of WRN-16-1 (c = 16, 32×32, batch 32)."""
  config = config_lib.base()
  config.data.name, config.model.depth, config.train.batch_size = "cifar10", 16, 32
  train_step, _, _, arguments = _lowered_steps(config)
  compiled = train_step.compile()
  state, batch = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), arguments)
  state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  start, repeats = time.perf_counter(), 3
  for _ in range(repeats):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  seconds = (time.perf_counter() - start) / repeats
  rate = train_step.cost_analysis()["flops"] / seconds
  return rate, f"WRN-16-1 TRADES step, batch 32, on {jax.devices()[0].device_kind}"


def print_estimates(runs) -> None:
  rate, how = measured_flop_rate()
  print(f"Measured {rate / 1e9:.1f} GFLOP/s ({how}); expected times assume that rate.")
  print(f"{'run':<40} {'params':>12} {'train PFLOP':>12} {'eval PFLOP':>11} "
        f"{'AutoAttack PFLOP':>17} {'hours':>9}")
  total_flops, cache = 0.0, {}
  for run_dir, run in runs:
    key = (run.model.family, run.model.depth, run.model.width, run.model.base_channels,
           tuple(run.model.strides), run.model.cnn_head,
           run.data.name, run.data.train_examples)
    if key not in cache:  # FLOPs depend on the architecture, not on β, seed or rule.
      cache[key] = run_flops(run)
    cost = cache[key]
    flops = cost["train_flops"] + cost["eval_flops"] + cost["autoattack_flops"]
    total_flops += flops
    print(f"{run_dir:<40} {cost['params']:>12,} {cost['train_flops'] / 1e15:>12.3f} "
          f"{cost['eval_flops'] / 1e15:>11.3f} {cost['autoattack_flops'] / 1e15:>17.3f} "
          f"{flops / rate / 3600:>9.2f}")
  print(f"total: {len(runs)} runs, {total_flops / 1e15:.2f} PFLOP, "
        f"{total_flops / rate / 3600:.2f} hours on this machine")
