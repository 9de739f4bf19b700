"""What every benchmark shares: the device, alternating timed runs, and JSON lines.

Each benchmark times robustwidth and its PyTorch baseline in one process, alternating the two
run by run so that a change in machine load hits both, and prints one JSON line per
measurement; every line carries the exact command line and the load average when it was taken.
The same code runs on CPU and on a CUDA machine (jax[cuda] and a CUDA torch): the device is the
default JAX backend's, and PyTorch runs on CUDA exactly when JAX does.
"""
import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import shlex
import statistics
import sys
import time
import typing
from typing import Callable

import jax

# Nominal dense peak FLOP/s per device kind and dtype (vendor figures, SXM parts).
_GPU_PEAKS = {
    "H100": {"float32": 67e12, "bfloat16": 989e12},
    "H200": {"float32": 67e12, "bfloat16": 989e12},
    "A100": {"float32": 19.5e12, "bfloat16": 312e12},
}


def command_line() -> str:
  return " ".join(["python", "-m", sys.modules["__main__"].__spec__.name]
                  + [shlex.quote(a) for a in sys.argv[1:]])


def load_average() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


def emit(record: dict) -> None:
  """Prints one measurement as a JSON line, with the command and the current load."""
  print(json.dumps({**record, "load": load_average(), "command": command_line()}), flush=True)


def torch_device():
  import torch
  return torch.device("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available()
                      else "cpu")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _cpu_peak_flops(dtype: str) -> float | None:
  """cores × clock × FMA lanes: 2 FMA units of 8 (AVX2) or 16 (AVX-512) float32 lanes; bfloat16
  counts the same unless the CPU has AVX-512 BF16 or AMX."""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    return None
  flags = next((l for l in info.splitlines() if l.startswith("flags")), "").split()
  mhz = [float(l.split(":")[1]) for l in info.splitlines() if l.startswith("cpu MHz")]
  if not mhz or "fma" not in flags:
    return None
  lanes = 16 if "avx512f" in flags else 8
  if dtype == "bfloat16" and ("avx512_bf16" in flags or "amx_bf16" in flags):
    lanes *= 2
  return len(mhz) * mhz[0] * 1e6 * 2 * 2 * lanes


def machine(dtype: str = "float32") -> dict:
  """The device the figures belong to, and its nominal peak for `dtype`."""
  device = jax.devices()[0]
  if device.platform == "cpu":
    name, peak = f"{_cpu_model()} ({os.cpu_count()} cores)", _cpu_peak_flops(dtype)
  else:
    name = device.device_kind
    peak = next((p[dtype] for kind, p in _GPU_PEAKS.items() if kind in name), None)
  import torch
  return {"backend": jax.default_backend(), "device": name, "device_count": jax.device_count(),
          "peak_gflops": peak and round(peak / 1e9, 1), "jax": jax.__version__,
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def alternate(runners: dict[str, Callable[[], None]], repeats: int,
              warmup: int = 1) -> dict[str, dict[str, list[float]]]:
  """Wall-clock and process CPU seconds per call of each runner (each call must block until
  its work is done), taken in rounds: every round runs each runner once, in an order rotated
  from round to round. CPU seconds count every thread of the process; on a loaded machine
  they vary less than wall time, and for one thread they approach the unloaded wall time."""
  names = list(runners)
  for _ in range(warmup):
    for name in names:
      runners[name]()
  times = {name: {"wall": [], "cpu": []} for name in names}
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      wall, cpu = time.perf_counter(), time.process_time()
      runners[name]()
      times[name]["cpu"].append(time.process_time() - cpu)
      times[name]["wall"].append(time.perf_counter() - wall)
  return times


def summarize(times: dict[str, list[float]], items: int) -> dict:
  median = statistics.median(times["wall"])
  return {"median_s": round(median, 4), "min_s": round(min(times["wall"]), 4),
          "runs_s": [round(s, 4) for s in times["wall"]],
          "cpu_median_s": round(statistics.median(times["cpu"]), 4),
          "images_per_s": round(items / median, 2)}


def jax_flops(compiled) -> float | None:
  """FLOPs of one call from XLA's cost analysis (a loop body counts once: pass an executable
  whose loops are unrolled)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, list):
    cost = cost[0] if cost else None
  return None if not cost or "flops" not in cost else float(cost["flops"])


def jax_memory(compiled=None) -> dict:
  """Peak device memory of an executable: XLA's static buffer assignment (when `compiled` is
  given) and, on devices that report it, the allocator's measured peak over the process."""
  result = {}
  analysis = compiled and compiled.memory_analysis()
  if analysis is not None:
    result["xla_buffers_mib"] = round((analysis.argument_size_in_bytes
                                       + analysis.output_size_in_bytes
                                       + analysis.temp_size_in_bytes
                                       - analysis.alias_size_in_bytes) / 2**20, 1)
  stats = jax.devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    result["device_peak_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
  return result


def torch_memory(device) -> dict:
  import torch
  if device.type == "cuda":
    return {"device_peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
  return {}


def torch_sync(device) -> None:
  import torch
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def model_arguments(parser, batch: int = 128) -> None:
  """The architecture, batch and precision flags every model benchmark takes."""
  parser.add_argument("--depth", type=int, default=16)
  parser.add_argument("--width", type=int, default=4)
  parser.add_argument("--batch", type=int, default=batch)
  parser.add_argument("--base-channels", type=int, default=16)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="compute dtype; parameters and BatchNorm statistics stay float32")
  parser.add_argument("--loop", type=loop_form, default="rolled",
                      help="PGD attack loop form: rolled (the library's), unrolled, or an int n "
                           "(n iterations per loop trip)")
  parser.add_argument("--conv-derivative", choices=CONV_DERIVATIVES, default="library",
                      help="the convolution's derivative: library (robustwidth's own), xla "
                           "(JAX's rules), or the library's with one of its CPU forms undone: "
                           "patches (no Winograd kernel gradient), hwio (input gradient "
                           "through the HWIO kernel)")
  run_arguments(parser)


def run_arguments(parser) -> None:
  """The flags every benchmark takes: timed rounds, threads, and whether PyTorch runs."""
  parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up")
  parser.add_argument("--single-thread", action="store_true",
                      help="one CPU thread for both frameworks: a fair comparison on a CPU "
                           "shared with other work, where multi-threaded runs stall")
  parser.add_argument("--skip-torch", action="store_true",
                      help="time robustwidth alone (loop-form and compile-time studies)")


def configure_threads(args) -> None:
  """Applies --single-thread; call before JAX creates its CPU client."""
  if args.single_thread:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               "=false intra_op_parallelism_threads=1").strip()
    import torch
    torch.set_num_threads(1)


CONV_DERIVATIVES = ("library", "xla", "patches", "hwio")


def conv_derivative(name: str):
  """Replaces `layers.conv2d` (read when a model is traced) by the derivative form `name`, to
  measure what each of the library's CPU forms is worth. Values are the same in every form."""
  from unittest import mock

  import jax
  from jax.custom_derivatives import SymbolicZero

  from robustwidth.models import conv, layers
  if name == "library":
    return contextlib.nullcontext()
  if name == "xla":
    return mock.patch.object(layers, "conv2d", conv.xla_conv)

  @functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
  def conv2d(x, kernel, stride, padding):
    return conv.xla_conv(x, kernel, stride, padding)

  @functools.partial(conv2d.defjvp, symbolic_zeros=True)
  def _jvp(stride, padding, primals, tangents):
    (x, kernel), (x_dot, kernel_dot) = primals, tangents
    terms = []
    if not isinstance(x_dot, SymbolicZero):
      terms.append(conv.xla_conv(x_dot, kernel, stride, padding) if name == "hwio" else
                   conv.xla_conv(x_dot, jax.numpy.transpose(kernel, (0, 1, 3, 2)), stride,
                                padding, "HWOI"))
    if not isinstance(kernel_dot, SymbolicZero):
      if name == "patches":
        patches = jax.checkpoint(conv.patches, static_argnums=(1, 2, 3))(
            x, kernel_dot.shape[0], stride, padding)
        terms.append(patches @ kernel_dot.reshape(-1, kernel_dot.shape[-1]))
      else:
        terms.append(conv.kernel_tangent(x, kernel_dot, stride, padding))
    y = conv.xla_conv(x, kernel, stride, padding)
    return y, sum(terms[1:], terms[0]) if terms else jax.numpy.zeros_like(y)

  return mock.patch.object(layers, "conv2d", conv2d)


def loop_form(name: str):
  """`--loop` as the attack loop's `fori_loop` unroll value."""
  if name.isdigit():
    return int(name)
  forms = {"rolled": False, "unrolled": True}
  if name not in forms:
    raise argparse.ArgumentTypeError(f"--loop must be rolled, unrolled or an int, not {name!r}")
  return forms[name]


def with_unroll(attack, unroll):
  """`attack` (steps.AttackSettings; None for standard training) with its loop's `unroll`."""
  return None if attack is None else dataclasses.replace(attack, unroll=unroll)


def config_for(args):
  """A robustwidth config for the benchmarked architecture and precision (TRADES defaults:
  ε 0.031, 10 inner steps of 0.007 from x + 0.001·N(0, 1), β 6; no augmentation)."""
  from robustwidth import config as config_lib
  config = config_lib.base()
  config.model.family = "wide_resnet"
  config.model.depth, config.model.width = args.depth, args.width
  config.model.base_channels = args.base_channels
  config.model.dtype = args.dtype
  return config


def models(args, config, device):
  """(graphdef, params, model_state) and `robustwidth.interop`'s PyTorch WideResNet holding
  the same weights, on `device` in channels-last layout (faster than NCHW for oneDNN on CPU)."""
  import torch
  from robustwidth import experiment, interop, models as rw_models
  model = experiment.create_model(config, (args.image_size, args.image_size, args.channels), 10)
  torch_model = interop.torch_model("wide_resnet", 10, depth=args.depth, width=args.width,
                                    in_channels=args.channels,
                                    base_channels=args.base_channels)
  torch_model.load_state_dict(interop.to_torch_state_dict(model))
  graphdef, params, model_state = rw_models.split(model)
  return graphdef, params, model_state, torch_model.to(device, memory_format=torch.channels_last)


class Setup(typing.NamedTuple):
  """What a model benchmark starts from: both models with the same weights and a fixed batch."""
  config: object
  device: object
  graphdef: object
  params: object
  model_state: object
  torch_model: object
  machine: dict
  batch: dict
  x: object
  y: object
  logits_gap: float


def setup(args) -> Setup:
  """Threads, config, device, both models, the machine's description, a fixed batch, and the
  check that both models compute the same logits on it."""
  configure_threads(args)
  config = config_for(args)
  device = torch_device()
  graphdef, params, model_state, torch_model = models(args, config, device)
  batch, x, y = data(args, device)
  gap = logits_gap(graphdef, params, model_state, torch_model, batch["image"], x)
  return Setup(config, device, graphdef, params, model_state, torch_model,
               machine(args.dtype), batch, x, y, gap)


def logits_gap(graphdef, params, model_state, torch_model, images, x) -> float:
  """Largest |logit| difference between the two models in evaluation mode on the batch: the
  check that both sides run the same network."""
  import numpy as np
  import torch
  from robustwidth import models as rw_models
  ours = np.asarray(rw_models.logits_fn(graphdef, params, model_state)(images))
  torch_model.eval()
  with torch.no_grad():
    theirs = torch_model(x).float().cpu().numpy()
  return float(np.abs(ours - theirs).max())


def report(common: dict, times: dict, items: int, flops: float | None, peak_gflops,
           extra: dict) -> None:
  """Emits one line per implementation (timings, GFLOP/s, fraction of peak, `extra[name]`)
  and, when both ran, one line with PyTorch's time over robustwidth's."""
  for name, seconds in times.items():
    emit_timing(common, name, seconds, items, flops, peak_gflops, extra.get(name, {}))
  if len(times) == 2:
    emit_ratio(common, times, "robustwidth", "pytorch")


def emit_timing(common: dict, name: str, seconds: dict, items: int, flops: float | None,
                peak_gflops, extra: dict) -> None:
  """One implementation's line: `summarize`, GFLOP/s and fraction of peak, then `extra`."""
  summary = summarize(seconds, items)
  record = {**common, "impl": name, **summary}
  if flops:
    record["gflops"] = round(flops / summary["median_s"] / 1e9, 1)
    if peak_gflops:
      record["peak_fraction"] = round(record["gflops"] / peak_gflops, 3)
  emit({**record, **extra})


def emit_ratio(common: dict, times: dict, ours: str, theirs: str) -> None:
  """The line comparing two implementations: `theirs`'s median time over `ours`'s, overall and
  round by round."""
  mine, other = times[ours]["wall"], times[theirs]["wall"]
  emit({**common, "impl": "ratio", "ours": ours, "theirs": theirs,
        "speedup": round(statistics.median(other) / statistics.median(mine), 3),
        "round_speedups": [round(t / r, 3) for t, r in zip(other, mine)]})


def describe_loop(unroll) -> str:
  return "rolled" if unroll is False else "unrolled" if unroll is True else f"unroll={unroll}"


def data(args, device):
  """A fixed random batch: NHWC jax arrays and the same values as NCHW torch tensors."""
  import numpy as np
  import torch
  rng = np.random.default_rng(0)
  images = rng.random((args.batch, args.image_size, args.image_size, args.channels),
                      dtype=np.float32)
  labels = rng.integers(0, 10, args.batch).astype(np.int32)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
  x = x.contiguous(memory_format=torch.channels_last)
  return {"image": images, "label": labels}, x, torch.from_numpy(labels).long().to(device)
