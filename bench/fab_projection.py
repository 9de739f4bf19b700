"""Time of FAB's box-constrained minimal-ℓ∞ projection, robustwidth against the sort-based
algorithm the reference (fra31/auto-attack's projection_linf) uses, in PyTorch and in JAX.

    python -m bench.fab_projection --rows 1000 --dim 784 --repeats 20

FAB-T projects 2·B rows per step (the iterate and the clean point), 100 steps per target, 9
targets: at B = 500 that is 900 calls on [1000, D]. robustwidth solves the piecewise-linear
equation by Newton's method (`attacks.fab.project_linf`); the baselines sort every row's
breakpoints and search the sorted cumulative sums, written here from the algorithm's
description. Inputs are 8-bit-grid points (as images) with Gaussian weights and offsets; every
result is checked against robustwidth's (`max_abs_gap`). Prints one JSON line per
implementation and one with the ratios.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bench import harness
from robustwidth.attacks.fab import project_linf

BENCH = "fab_projection"


def _sorted_projection_jax(t, w, b):
  """The textbook form: sort the rooms, find the segment by cumulative sums."""
  gap = jnp.sum(w * t, axis=1) - b
  w = jnp.where((gap >= 0)[:, None], w, -w)
  gap = jnp.abs(gap)
  room = jnp.where(w > 0, t, 1.0 - t)
  order = jnp.argsort(-room, axis=1)
  room_s = jnp.take_along_axis(room, order, axis=1)
  weight_s = jnp.abs(jnp.take_along_axis(w, order, axis=1))
  slope = jnp.cumsum(weight_s, axis=1)
  moved = weight_s * room_s
  rest = jnp.sum(moved, axis=1, keepdims=True) - jnp.cumsum(moved, axis=1)
  k = jnp.sum(slope * room_s + rest > gap[:, None], axis=1) - 1
  kk = jnp.maximum(k, 0)[:, None]
  lam = (gap - jnp.take_along_axis(rest, kk, 1)[:, 0]) / jnp.maximum(
      jnp.take_along_axis(slope, kk, 1)[:, 0], 1e-30)
  lam = jnp.where(k >= 0, jnp.maximum(lam, 0.0), jnp.inf)
  return -jnp.sign(w) * jnp.minimum(lam[:, None], room)


def _sorted_projection_torch(t, w, b):
  gap = (w * t).sum(1) - b
  w = torch.where((gap >= 0)[:, None], w, -w)
  gap = gap.abs()
  room = torch.where(w > 0, t, 1.0 - t)
  room_s, order = torch.sort(room, dim=1, descending=True)
  weight_s = torch.gather(w, 1, order).abs()
  slope = weight_s.cumsum(1)
  moved = weight_s * room_s
  rest = moved.sum(1, keepdim=True) - moved.cumsum(1)
  k = (slope * room_s + rest > gap[:, None]).sum(1) - 1
  kk = k.clamp(min=0)[:, None]
  lam = (gap - rest.gather(1, kk)[:, 0]) / slope.gather(1, kk)[:, 0].clamp(min=1e-30)
  lam = torch.where(k >= 0, lam.clamp(min=0.0), torch.full_like(lam, float("inf")))
  return -torch.sign(w) * torch.minimum(lam[:, None], room)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=1000)
  parser.add_argument("--dim", type=int, default=784)
  harness.run_arguments(parser)
  args = parser.parse_args(argv)
  harness.configure_threads(args)
  rng = np.random.default_rng(0)
  t = (rng.integers(0, 256, (args.rows, args.dim)) / 255).astype(np.float32)
  w = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
  b = (np.sum(w * t, 1) + rng.normal(0, 20.0, args.rows)).astype(np.float32)
  jax_args = [jnp.asarray(a) for a in (t, w, b)]
  torch_args = [torch.from_numpy(a) for a in (t, w, b)]
  newton, sorted_jax = jax.jit(project_linf), jax.jit(_sorted_projection_jax)
  expected = np.asarray(newton(*jax_args))
  outputs = {}
  runners = {
      "robustwidth": lambda: outputs.update(
          robustwidth=jax.block_until_ready(newton(*jax_args))),
      "jax_sorted": lambda: outputs.update(
          jax_sorted=jax.block_until_ready(sorted_jax(*jax_args))),
  }
  if not args.skip_torch:
    runners["pytorch_sorted"] = lambda: outputs.update(
        pytorch_sorted=_sorted_projection_torch(*torch_args))
  times = harness.alternate(runners, args.repeats)
  machine = harness.machine()
  summaries = {}
  for name, measured in times.items():
    summaries[name] = harness.summarize(measured, args.rows)
    gap = float(np.max(np.abs(np.asarray(outputs[name]) - expected)))
    harness.emit({"bench": BENCH, "impl": name, "rows": args.rows, "dim": args.dim,
                  **summaries[name], "max_abs_gap": gap, **machine})
  robustwidth = summaries["robustwidth"]["median_s"]
  harness.emit({"bench": BENCH, "compare": "speedup of robustwidth",
                **{f"over_{name}": round(s["median_s"] / robustwidth, 2)
                   for name, s in summaries.items() if name != "robustwidth"}})


if __name__ == "__main__":
  main()
