"""Images per second of PGD-20 robustness evaluation, robustwidth against PyTorch.

    python -m bench.pgd_eval --depth 16 --width 4 --batch 500 [--dtype bfloat16]

One evaluation batch: PGD with cross-entropy from a uniform start in the ε-ball (ε 0.031,
20 steps of 0.003, BatchNorm in evaluation mode), then the natural and adversarial
predictions in one forward pass. robustwidth's step is `steps.make_eval_step`, jitted as
`robustwidth.train` does it (batch sharded on the 'data' mesh, compiled ahead of time); the
baseline is `bench.torch_reference.pgd_eval` with the same weights. Prints JSON lines: one per
implementation and one comparing them; `test_set_s` is the time for the 10,000 CIFAR test
images at the median rate.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bench import harness, torch_reference
from robustwidth import experiment, parallel, steps

BENCH = "pgd_eval"


def compile_step(args, config, graphdef, params, model_state):
  """(compiled eval step, params, model state, mesh, compile (wall, CPU) seconds, FLOPs per
  batch)."""
  mesh = parallel.data_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  params, model_state = parallel.replicate((params, model_state), mesh)
  shape = (args.batch, args.image_size, args.image_size, args.channels)
  batch_spec = {"image": jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharded),
                "label": jax.ShapeDtypeStruct((args.batch,), jnp.int32, sharding=sharded),
                "mask": jax.ShapeDtypeStruct((args.batch,), jnp.bool_, sharding=sharded)}

  def lower(unroll):
    attack = harness.with_unroll(experiment.eval_attack(config), unroll)
    jitted = jax.jit(steps.make_eval_step(graphdef, attack),
                     in_shardings=(replicated, replicated, sharded, replicated),
                     out_shardings=replicated)
    with harness.conv_derivative(args.conv_derivative):
      return jitted.lower(params, model_state, batch_spec, jax.random.PRNGKey(0))

  start, cpu = time.perf_counter(), time.process_time()
  compiled = lower(args.loop).compile()
  compile_s = (time.perf_counter() - start, time.process_time() - cpu)
  return compiled, params, model_state, mesh, compile_s, harness.jax_flops(lower(True))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  harness.model_arguments(parser, batch=500)
  args = parser.parse_args(argv)
  config, device, graphdef, params, model_state, torch_model, machine, batch, x, y, gap = (
      harness.setup(args))
  compiled, params, model_state, mesh, compile_s, flops = compile_step(
      args, config, graphdef, params, model_state)
  jax_batch = parallel.put_batch({**batch, "mask": np.ones(args.batch, bool)}, mesh)
  key = jax.random.PRNGKey(0)

  def robustwidth_eval():
    jax.block_until_ready(compiled(params, model_state, jax_batch, key))

  runners = {"robustwidth": robustwidth_eval}
  if not args.skip_torch:
    settings = dict(eps=config.attack.eps, step_size=config.eval.step_size,
                    num_steps=config.eval.num_steps, dtype=getattr(torch, args.dtype))

    def torch_eval():
      torch_reference.pgd_eval(torch_model, x, y, **settings)
      harness.torch_sync(device)

    runners["pytorch"] = torch_eval
  times = harness.alternate(runners, args.repeats)
  common = {"bench": BENCH, "depth": args.depth, "width": args.width, "batch": args.batch,
            "base_channels": args.base_channels, "image_size": args.image_size,
            "dtype": args.dtype, "conv_derivative": args.conv_derivative,
            "num_steps": config.eval.num_steps, "logits_gap": gap, **machine}
  extra = {name: {"test_set_s": round(10_000 / args.batch * statistics.median(t["wall"]), 1)}
           for name, t in times.items()}
  extra["robustwidth"].update(loop=harness.describe_loop(args.loop),
                              compile_s=round(compile_s[0], 2),
                              compile_cpu_s=round(compile_s[1], 2),
                              gflop_per_batch=flops and round(flops / 1e9, 2),
                              **harness.jax_memory(compiled))
  extra.get("pytorch", {}).update(harness.torch_memory(device))
  harness.report(common, times, args.batch, flops, machine["peak_gflops"], extra)

if __name__ == "__main__":
  main()
