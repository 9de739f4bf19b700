"""Images per second of one TRADES train step, robustwidth against PyTorch.

    python -m bench.trades_step --depth 16 --width 4 --batch 128 [--dtype bfloat16]

One step: 10 inner PGD steps on the KL objective in evaluation mode (ε 0.031, step 0.007),
then CE + β·KL with BatchNorm in training mode and an SGD update. robustwidth's step is built
and jitted exactly as `robustwidth.train` does it (state replicated and donated, batch sharded
on the 'data' mesh, compiled ahead of time); the baseline is `bench.torch_reference` with the
same weights. Prints JSON lines: one per implementation and one comparing them.
"""
import argparse
import dataclasses
import time

import jax
import torch

from bench import harness, torch_reference
from robustwidth import experiment, parallel, steps
from robustwidth import config as config_lib

BENCH = "trades_step"


def compile_step(args, config, graphdef, params, model_state):
  """(compiled step, its initial state, mesh, compile (wall, CPU) seconds, FLOPs per step)."""
  spec = experiment.RunSpec((args.image_size, args.image_size, args.channels), 10,
                            steps_per_epoch=50_000 // args.batch)
  optimizer = experiment.optimizer(config, spec)
  settings = experiment.train_settings(config, spec)
  mesh = parallel.data_mesh()
  state = parallel.replicate(experiment.train_state(config, spec, params, model_state), mesh)
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  batch_spec = experiment.batch_spec(args.batch, spec.image_shape, sharded)

  def lower(unroll):
    step = steps.make_train_step(graphdef, optimizer, dataclasses.replace(
        settings, attack=harness.with_unroll(settings.attack, unroll)))
    jitted = jax.jit(step, in_shardings=(replicated, sharded),
                     out_shardings=(replicated, replicated), donate_argnums=0)
    with harness.conv_derivative(args.conv_derivative):
      return jitted.lower(state, batch_spec)

  start, cpu = time.perf_counter(), time.process_time()
  compiled = lower(args.loop).compile()
  compile_s = (time.perf_counter() - start, time.process_time() - cpu)
  return compiled, state, mesh, compile_s, harness.jax_flops(lower(True))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  harness.model_arguments(parser)
  args = parser.parse_args(argv)
  config, device, graphdef, params, model_state, torch_model, machine, batch, x, y, gap = (
      harness.setup(args))
  compiled, state, mesh, compile_s, flops = compile_step(args, config, graphdef, params,
                                                         model_state)
  jax_batch = parallel.put_batch(batch, mesh)

  def robustwidth_step():
    nonlocal state
    state, metrics = compiled(state, jax_batch)
    jax.block_until_ready((state, metrics))

  runners = {"robustwidth": robustwidth_step}
  if not args.skip_torch:
    optimizer = torch_reference.sgd(torch_model, lr=config.train.lr,
                                    momentum=config.train.momentum,
                                    weight_decay=config.train.weight_decay)
    settings = dict(beta=config_lib.beta(config), eps=config.attack.eps,
                    step_size=config.train.attack_step_size,
                    num_steps=config.train.attack_steps, dtype=getattr(torch, args.dtype))

    def torch_step():
      torch_reference.trades_step(torch_model, optimizer, x, y, **settings)
      harness.torch_sync(device)

    runners["pytorch"] = torch_step
  times = harness.alternate(runners, args.repeats)
  common = {"bench": BENCH, "depth": args.depth, "width": args.width, "batch": args.batch,
            "base_channels": args.base_channels, "image_size": args.image_size,
            "dtype": args.dtype, "conv_derivative": args.conv_derivative, "logits_gap": gap,
            **machine}
  harness.report(common, times, args.batch, flops, machine["peak_gflops"], {
      "robustwidth": {"loop": harness.describe_loop(args.loop), "compile_s": round(compile_s[0], 2),
                      "compile_cpu_s": round(compile_s[1], 2),
                      "gflop_per_step": flops and round(flops / 1e9, 2),
                      **harness.jax_memory(compiled)},
      "pytorch": harness.torch_memory(device)})


if __name__ == "__main__":
  main()
