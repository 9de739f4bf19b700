"""The convolution the layers use, `conv2d`: exactly `lax.conv_general_dilated`, with its
derivative defined here in the forms docs/benchmarks.md measured fastest on XLA:CPU (the
backend-specific numerics live in this module and winograd.py, not in the layers).

On CPU the input gradient goes through the kernel stored as HWOI, and the kernel gradient is
Winograd's for 3×3 stride-1 convolutions and otherwise a matrix product of the input patches.
Off CPU every derivative is XLA's own convolution.
"""
import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from robustwidth.models import winograd


def xla_conv(x, kernel, stride: int, padding: int, kernel_spec: str = "HWIO"):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=("NHWC", kernel_spec, "NHWC"))


def patches(x, size: int, stride: int, padding: int):
  """[N, H', W', size·size·C]: the input window under each output pixel, in HWI order, so
  that `patches @ kernel.reshape(-1, out)` is the convolution."""
  if size == 1:
    return x[:, ::stride, ::stride]
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  n, h, w, c = x.shape
  out_h, out_w = (h - size) // stride + 1, (w - size) // stride + 1
  rows = (jnp.arange(out_h) * stride)[:, None, None, None] + jnp.arange(size)[:, None]
  cols = (jnp.arange(out_w) * stride)[:, None, None] + jnp.arange(size)
  return x[:, rows, cols].reshape(n, out_h, out_w, size * size * c)


def kernel_tangent(x, kernel_dot, stride: int, padding: int):
  """conv(x, kernel_dot), in the form whose transpose (the kernel gradient) XLA:CPU ran
  fastest (docs/benchmarks.md): Winograd F(4×4, 3×3) for stride-1 3×3 convolutions (36 matrix products over all
  tiles), otherwise patches @ kernel_dot, one matrix product over all output pixels, with the
  patches rebuilt in the backward pass (jax.checkpoint) rather than kept, as they are size²
  times the input."""
  if jax.default_backend() != "cpu":
    return xla_conv(x, kernel_dot, stride, padding)
  if kernel_dot.shape[:2] == (3, 3) and stride == 1 and padding == 1:
    return winograd.conv3x3(x, kernel_dot)
  windows = jax.checkpoint(patches, static_argnums=(1, 2, 3))(
      x, kernel_dot.shape[0], stride, padding)
  return jnp.dot(windows, kernel_dot.reshape(-1, kernel_dot.shape[-1]))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, stride: int, padding: int):
  """NHWC input, HWIO kernel, symmetric zero padding: `lax.conv_general_dilated`."""
  return xla_conv(x, kernel, stride, padding)


@functools.partial(conv2d.defjvp, symbolic_zeros=True)
def _conv2d_jvp(stride, padding, primals, tangents):
  x, kernel = primals
  x_dot, kernel_dot = tangents
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    # The same convolution with the kernel stored as HWOI: its transpose (the input gradient)
    # then reads the kernel in the canonical HWIO layout, which XLA:CPU otherwise fails to
    # arrange inside while loops.
    terms.append(xla_conv(x_dot, jnp.transpose(kernel, (0, 1, 3, 2)), stride, padding, "HWOI"))
  if not isinstance(kernel_dot, SymbolicZero):
    terms.append(kernel_tangent(x, kernel_dot, stride, padding))
  y = xla_conv(x, kernel, stride, padding)
  return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)
