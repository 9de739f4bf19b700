"""`conv.conv2d` and `winograd.conv3x3` against XLA's own convolution and its derivatives."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustwidth.models import conv, winograd


def _reference(x, kernel, stride, padding):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride),
                                      ((padding, padding), (padding, padding)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _inputs(shape, size, out):
  kx, kk, kt = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kk, (size, size, shape[-1], out))
  return x, kernel, kt


def _assert_close(actual, expected, rtol=3e-5):
  """Equal up to float32 rounding, relative to the largest entry."""
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    scale = float(jnp.max(jnp.abs(e)))
    np.testing.assert_allclose(a, e, atol=rtol * scale, rtol=0)


# (input shape, kernel size, out channels, stride, padding): the Winograd path (3×3, stride 1,
# padding 1) on sizes that are and are not multiples of its 4×4 tiles, and the patch path.
CASES = [((2, 8, 8, 3), 3, 5, 1, 1), ((3, 7, 5, 4), 3, 2, 1, 1), ((2, 9, 9, 3), 3, 4, 2, 1),
         ((2, 8, 8, 4), 1, 6, 2, 0), ((2, 6, 6, 2), 3, 3, 1, 0)]


@pytest.mark.parametrize("shape,size,out,stride,padding", CASES)
def test_conv2d_and_its_derivatives_are_xlas(shape, size, out, stride, padding):
  x, kernel, key = _inputs(shape, size, out)
  ours = lambda x, k: conv.conv2d(x, k, stride, padding)
  theirs = lambda x, k: _reference(x, k, stride, padding)
  y = theirs(x, kernel)
  _assert_close(ours(x, kernel), y)
  cotangent = jax.random.normal(key, y.shape)
  _assert_close(jax.vjp(ours, x, kernel)[1](cotangent), jax.vjp(theirs, x, kernel)[1](cotangent))
  tangents = (x[::-1], kernel[::-1])
  _assert_close(jax.jvp(ours, (x, kernel), tangents), jax.jvp(theirs, (x, kernel), tangents))
  # Second order, as the Lipschitz estimator's ascent on the input-gradient norm needs it.
  grad_norm = lambda conv: lambda x, k: jnp.sum(jax.grad(
      lambda x: jnp.sum(jnp.tanh(conv(x, k)) * cotangent))(x) ** 2)
  _assert_close(jax.grad(grad_norm(ours), argnums=(0, 1))(x, kernel),
                jax.grad(grad_norm(theirs), argnums=(0, 1))(x, kernel))


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (8, 8), (5, 7), (32, 32)])
def test_winograd_conv3x3_is_the_convolution_and_differentiates_like_it(size):
  x, kernel, key = _inputs((2, *size, 3), 3, 4)
  y = _reference(x, kernel, 1, 1)
  _assert_close(winograd.conv3x3(x, kernel), y)
  cotangent = jax.random.normal(key, y.shape)
  _assert_close(jax.vjp(winograd.conv3x3, x, kernel)[1](cotangent),
                jax.vjp(lambda x, k: _reference(x, k, 1, 1), x, kernel)[1](cotangent))


def test_bfloat16_conv2d_keeps_its_dtype_and_derivatives():
  x, kernel, key = _inputs((2, 8, 8, 3), 3, 4)
  x16, kernel16 = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  ours = lambda x, k: conv.conv2d(x, k, 1, 1)
  theirs = lambda x, k: _reference(x, k, 1, 1)
  y = theirs(x16, kernel16)
  cotangent = jax.random.normal(key, y.shape, jnp.bfloat16)
  grads = jax.vjp(ours, x16, kernel16)[1](cotangent)
  assert ours(x16, kernel16).dtype == jnp.bfloat16
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  _assert_close([g.astype(jnp.float32) for g in grads],
                [g.astype(jnp.float32) for g in jax.vjp(theirs, x16, kernel16)[1](cotangent)],
                rtol=2e-2)
