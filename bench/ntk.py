"""Time and memory of the empirical NTK Θ(x, x), robustwidth against PyTorch (torch.func).

    python -m bench.ntk --family cnn --width 4 --image-size 32 --n-examples 64 --chunk 16

robustwidth's `ntk.empirical_ntk` runs in each implementation, jitted and compiled ahead of
time, whole and (with `--chunk`) in chunks of that many examples. The PyTorch baselines are
the two torch.func forms on a module holding the same weights, written as robustwidth computes
them: per-example Jacobians by vmap(jacrev), formed once for the symmetric kernel and
contracted over the parameters; and NTK-vector products, a vjp per output of each x_j, then a
jvp of f at all of x along it, so no Jacobian is formed (the torch.func tutorial's form redoes
the vjp for every pair; torch.func.linearize, the analogue of robustwidth's jvp, ran slower).
The model is a small MLP or CNN (`robustwidth.models`, no BatchNorm). Every kernel is checked
against the first robustwidth one (`max_rel_gap`: largest difference over largest entry).
Prints JSON lines: one per implementation (median time; for robustwidth compile time,
GFLOP/s from XLA's cost analysis and XLA's buffer sizes, and on GPU the process's peak so far;
for PyTorch on CUDA the peak of one call) and one per PyTorch baseline and robustwidth run of
the same implementation, comparing them.
"""
import argparse
import functools
import time

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import func, nn

from bench import harness
from robustwidth import models, ntk

BENCH = "ntk"
NUM_CLASSES = 10


class TorchLayer(nn.Module):
  """A robustwidth Dense or Conv layer: the stored kernel, times its multiplier in the forward
  pass, so that the parameters, and with them the NTK, match under either parameterization."""

  def __init__(self, layer):
    super().__init__()
    kernel = np.asarray(layer.kernel[...])
    self.conv = kernel.ndim == 4
    kernel = kernel.transpose(3, 2, 0, 1) if self.conv else kernel.T   # OIHW / [out, in]
    self.weight = nn.Parameter(torch.from_numpy(kernel.copy()))
    self.bias = (None if layer.bias is None
                 else nn.Parameter(torch.from_numpy(np.array(layer.bias[...]))))
    self.multiplier = float(layer.multiplier)
    self.stride, self.padding = getattr(layer, "stride", 1), getattr(layer, "padding", 0)

  def forward(self, x):
    weight = self.weight * self.multiplier
    if self.conv:
      return F.conv2d(x, weight, self.bias, self.stride, self.padding)
    return F.linear(x, weight, self.bias)


class TorchSmall(nn.Module):
  """`robustwidth.models.MLP` or `CNN` with the same weights; the MLP takes inputs flattened
  from NHWC, the CNN NCHW images."""

  def __init__(self, model):
    super().__init__()
    self.is_cnn = isinstance(model, models.CNN)
    self.hidden = nn.ModuleList(TorchLayer(layer)
                                for layer in (model.convs if self.is_cnn else model.hidden))
    self.head = TorchLayer(model.head)

  def forward(self, x):
    for layer in self.hidden:
      x = torch.relu(layer(x))
    return self.head(x.mean((2, 3)) if self.is_cnn else x)


def torch_ntk_fns(model, full: bool):
  """{implementation: kernel(params, x)} for the two torch.func forms; `full` keeps the
  [N, N, K, K] kernel, else the trace over K gives [N, N]."""

  def f(params, x):
    return func.functional_call(model, params, (x,))

  def one(params, xi):
    return f(params, xi[None])[0]

  def jacobian_contraction(params, x):
    jacobians = func.vmap(func.jacrev(one), (None, 0))(params, x)
    expression = "naf,mbf->nmab" if full else "naf,maf->nm"
    return sum(torch.einsum(expression, j, j) for j in
               (j.flatten(2) for j in jacobians.values()))

  def ntk_vector_products(params, x):
    basis = torch.eye(NUM_CLASSES, dtype=x.dtype, device=x.device)

    def column(xj):   # [K_b, N, K_a]: J(x) J(x_j)ᵀ e_b for each output b of f(x_j)
      _, vjp = func.vjp(lambda p: one(p, xj), params)
      tangents = func.vmap(vjp)(basis)[0]
      return func.vmap(lambda t: func.jvp(lambda p: f(p, x), (params,), (t,))[1])(tangents)

    kernel = func.vmap(column)(x).permute(2, 0, 3, 1)   # [N, N, K_a, K_b]
    return kernel if full else torch.einsum("nmaa->nm", kernel)

  return {"jacobian_contraction": jacobian_contraction,
          "ntk_vector_products": ntk_vector_products}


def build(args):
  """(robustwidth model, inputs [N, H, W, C])."""
  shape = (args.image_size, args.image_size, args.channels)
  model = models.create_model(args.family, width=args.width, num_classes=NUM_CLASSES,
                              input_shape=shape, seed=0, depth=args.depth,
                              base_channels=args.base_channels,
                              parameterization=args.parameterization)
  return model, np.random.default_rng(0).random((args.n_examples, *shape), dtype=np.float32)


def compile_kernel(f, params, x, *, implementation, batch_size, trace_axes):
  """(compiled kernel function, compile (wall, CPU) seconds)."""
  jitted = jax.jit(lambda p, x: ntk.empirical_ntk(f, p, x, trace_axes=trace_axes,
                                                  implementation=implementation,
                                                  batch_size=batch_size))
  start, cpu = time.perf_counter(), time.process_time()
  compiled = jitted.lower(params, x).compile()
  return compiled, (time.perf_counter() - start, time.process_time() - cpu)


def relative_gap(kernel, reference) -> float:
  return float(np.abs(kernel - reference).max() / np.abs(reference).max())


def robustwidth_runs(args, f, params, x):
  """(runners, kernels, FLOPs, extra fields) of each robustwidth variant, by name."""
  runners, kernels, flops, extra = {}, {}, {}, {}
  for implementation in args.implementations:
    for batch_size in [None] + ([args.chunk] if args.chunk else []):
      name = f"robustwidth/{implementation}" + (f"/chunk={batch_size}" if batch_size else "")
      compiled, compile_s = compile_kernel(f, params, x, implementation=implementation,
                                           batch_size=batch_size,
                                           trace_axes=() if args.full else (-1,))
      kernels[name] = np.asarray(compiled(params, x))
      runners[name] = functools.partial(_block, compiled, params, x)
      # A chunked kernel loops (`lax.map`), which cost analysis counts once: no FLOPs for it.
      flops[name] = None if batch_size else harness.jax_flops(compiled)
      extra[name] = {"compile_s": round(compile_s[0], 2), "compile_cpu_s": round(compile_s[1], 2),
                     **harness.jax_memory(compiled)}
  return runners, kernels, flops, extra


def pytorch_runs(args, model, x, device):
  """(runners, kernels, extra fields) of each PyTorch baseline, by name; the first call of each
  also measures its peak memory."""
  torch_model = TorchSmall(model).to(device)
  params = {k: v.detach() for k, v in torch_model.named_parameters()}
  x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if args.family == "cnn"
                       else x.reshape(len(x), -1)).to(device)
  runners, kernels, extra = {}, {}, {}
  for implementation, kernel_fn in torch_ntk_fns(torch_model, args.full).items():
    if implementation in args.implementations:
      name = f"pytorch/{implementation}"
      runners[name] = functools.partial(_sync, device, kernel_fn, params, x)
      if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
      kernels[name] = runners[name]().cpu().numpy()
      extra[name] = harness.torch_memory(device)
  return runners, kernels, extra


def _block(compiled, params, x):
  return jax.block_until_ready(compiled(params, x))


def _sync(device, kernel_fn, params, x):
  kernel = kernel_fn(params, x)
  harness.torch_sync(device)
  return kernel


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--family", choices=("mlp", "cnn"), default="cnn")
  parser.add_argument("--width", type=int, default=1)
  parser.add_argument("--depth", type=int, default=2, help="the MLP's hidden layers")
  parser.add_argument("--base-channels", type=int, default=16,
                      help="channels (MLP: units) that width multiplies")
  parser.add_argument("--parameterization", choices=("standard", "ntk"), default="standard")
  parser.add_argument("--image-size", type=int, default=8)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--n-examples", type=int, default=64, help="the kernel is N × N")
  parser.add_argument("--full", action="store_true",
                      help="the untraced [N, N, K, K] kernel instead of the trace [N, N]")
  parser.add_argument("--chunk", type=int, default=16,
                      help="also time robustwidth in chunks of this many examples (0: not)")
  parser.add_argument("--implementations", nargs="+", choices=ntk.IMPLEMENTATIONS,
                      default=list(ntk.IMPLEMENTATIONS))
  harness.run_arguments(parser)
  args = parser.parse_args(argv)
  harness.configure_threads(args)
  device = harness.torch_device()
  model, x = build(args)
  f, params = ntk.model_fn_and_params(model)
  machine = harness.machine()
  runners, kernels, flops, extra = robustwidth_runs(args, f, params, jax.device_put(x))
  if not args.skip_torch:
    torch_runners, torch_kernels, torch_extra = pytorch_runs(args, model, x, device)
    runners.update(torch_runners)
    kernels.update(torch_kernels)
    extra.update(torch_extra)
    # The same algorithm as robustwidth's implementation of the same name: the same FLOPs.
    flops.update({name: flops[name.replace("pytorch/", "robustwidth/")]
                  for name in torch_runners})
  reference = next(iter(kernels))
  for name, kernel in kernels.items():
    extra[name].update(gflop=flops[name] and round(flops[name] / 1e9, 3),
                       max_rel_gap=relative_gap(kernel, kernels[reference]))

  times = harness.alternate(runners, args.repeats)
  common = {"bench": BENCH, "family": args.family, "width": args.width, "depth": args.depth,
            "base_channels": args.base_channels, "parameterization": args.parameterization,
            "image_size": args.image_size, "channels": args.channels,
            "n_examples": args.n_examples, "kernel": "full" if args.full else "traced",
            "num_params": models.count_params(params), "gap_reference": reference, **machine}
  for name, seconds in times.items():
    harness.emit_timing(common, name, seconds, args.n_examples, flops[name],
                        machine["peak_gflops"], extra[name])
  for theirs in (name for name in times if name.startswith("pytorch/")):
    for ours in (name for name in times
                 if name.startswith(theirs.replace("pytorch/", "robustwidth/"))):
      harness.emit_ratio(common, times, ours, theirs)


if __name__ == "__main__":
  main()
