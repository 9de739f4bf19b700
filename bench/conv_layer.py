"""GFLOP/s of one 3×3 convolution layer, forward and with its gradients, against PyTorch:
the measurement behind "what limits the CPU figures" in docs/benchmarks.md.

    python -m bench.conv_layer --batch 128 --size 32 --channels 64
    XLA_FLAGS=--xla_cpu_use_onednn=true python -m bench.conv_layer   # another XLA:CPU path

Implementations, on the same input, kernel and output gradient (each checked against XLA's
convolution before timing):
  xla_conv     `lax.conv_general_dilated` with JAX's own derivative;
  robustwidth  `robustwidth.models.conv.conv2d`, the library's convolution (XLA's forward
               and input gradient, Winograd's kernel gradient on CPU);
  winograd     `robustwidth.models.winograd.conv3x3` for every pass: 4× fewer multiplications,
               the one way to beat PyTorch where PyTorch runs near the machine's peak;
  matmul       no convolution: one matrix product with the layer's FLOPs (the im2col shape,
               patches already built), the rate XLA:CPU's matrix product reaches here;
  pytorch      `torch.nn.functional.conv2d` (oneDNN), channels-last;
and, as the machine's practical ceiling, a 4096² matrix product in each framework
(`matmul/square`, `pytorch_matmul/square`).
Each is timed on the forward pass, with the input gradient (an attack step), and with both
gradients (a training step). GFLOP/s count the direct convolution's 2·N·H·W·9·C·K per pass, so
Winograd's rate is the direct-equivalent one.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bench import harness
from robustwidth.models import conv, winograd

BENCH = "conv_layer"
# Convolution-sized passes per measurement: the forward, the input gradient (what an attack
# step adds), the kernel gradient (what a training step adds).
_PASSES = {"forward": 1, "with_input_gradient": 2, "with_gradients": 3}
# The side of the square matrix product timed in both frameworks: the dense rate this machine
# reaches at its clock under load, a ceiling for any convolution that does the same arithmetic.
_SQUARE = 4096


def xla_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--size", type=int, default=32, help="image height and width")
  parser.add_argument("--channels", type=int, default=64, help="input and output channels")
  harness.run_arguments(parser)
  args = parser.parse_args(argv)
  harness.configure_threads(args)
  n, s, c = args.batch, args.size, args.channels
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, s, s, c), np.float32)
  kernel = rng.standard_normal((3, 3, c, c), np.float32) * np.float32((2 / (9 * c)) ** 0.5)
  dy = rng.standard_normal((n, s, s, c), np.float32)
  flops = 2 * n * s * s * 9 * c * c
  convs = {"xla_conv": xla_conv, "robustwidth": lambda x, k: conv.conv2d(x, k, 1, 1),
           "winograd": winograd.conv3x3}
  expected_y = xla_conv(x, kernel)
  expected_grads = jax.vjp(xla_conv, x, kernel)[1](dy)
  runners, errors = {}, {}
  jx, jkernel, jdy = jax.device_put((x, kernel, dy))
  for name, convolve in convs.items():
    forward = jax.jit(convolve)
    both = jax.jit(lambda x, k, dy, f=convolve: (f(x, k), jax.vjp(f, x, k)[1](dy)))
    y, grads = both(jx, jkernel, jdy)
    errors[name] = {"relative_error": max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
        for a, b in zip((y, *grads), (expected_y, *expected_grads)))}

    def with_input_gradient(x, k, dy, f=convolve):
      y, vjp = jax.vjp(lambda x: f(x, k), x)
      return y, vjp(dy)

    attack_pass = jax.jit(with_input_gradient)
    runners[f"{name}/forward"] = lambda f=forward: jax.block_until_ready(f(jx, jkernel))
    runners[f"{name}/with_input_gradient"] = (
        lambda f=attack_pass: jax.block_until_ready(f(jx, jkernel, jdy)))
    runners[f"{name}/with_gradients"] = (
        lambda f=both: jax.block_until_ready(f(jx, jkernel, jdy)))
  square_matrix = rng.standard_normal((_SQUARE, _SQUARE), np.float32)
  patches, kernel_matrix, square = jax.device_put(
      (rng.standard_normal((n * s * s, 9 * c), np.float32), kernel.reshape(-1, c),
       square_matrix))
  matmul = jax.jit(jnp.dot)
  runners["matmul/forward"] = lambda: jax.block_until_ready(matmul(patches, kernel_matrix))
  runners["matmul/square"] = lambda: jax.block_until_ready(matmul(square, square))
  if not args.skip_torch:
    device = harness.torch_device()
    to_torch = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).to(device).contiguous(
        memory_format=torch.channels_last)
    tx, tdy = to_torch(x).requires_grad_(), to_torch(dy)
    tk = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous().to(device).requires_grad_()

    def torch_forward():
      with torch.no_grad():
        torch.nn.functional.conv2d(tx, tk, padding=1)
      harness.torch_sync(device)

    def torch_with_input_gradient():
      y = torch.nn.functional.conv2d(tx, tk.detach(), padding=1)
      torch.autograd.grad(y, tx, tdy)
      harness.torch_sync(device)

    def torch_with_gradients():
      y = torch.nn.functional.conv2d(tx, tk, padding=1)
      torch.autograd.grad(y, (tx, tk), tdy)
      harness.torch_sync(device)

    errors["pytorch"] = {"relative_error": float(
        np.abs(torch.nn.functional.conv2d(tx, tk, padding=1).detach().permute(0, 2, 3, 1)
               .cpu().numpy() - expected_y).max() / np.abs(expected_y).max())}
    torch_square = torch.from_numpy(square_matrix).to(device)

    def torch_square_matmul():
      torch.mm(torch_square, torch_square)
      harness.torch_sync(device)

    runners.update({"pytorch/forward": torch_forward,
                    "pytorch/with_input_gradient": torch_with_input_gradient,
                    "pytorch/with_gradients": torch_with_gradients,
                    "pytorch_matmul/square": torch_square_matmul})
  machine = harness.machine()
  common = {"bench": BENCH, "batch": n, "size": s, "channels": c, **machine}
  times = harness.alternate(runners, args.repeats)
  for name, seconds in times.items():
    impl, passes = name.split("/")
    work = 2 * _SQUARE**3 if passes == "square" else flops * _PASSES[passes]
    harness.emit_timing(common, name, seconds, n, work, machine["peak_gflops"],
                        errors.get(impl, {}))


if __name__ == "__main__":
  main()
