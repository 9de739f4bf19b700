"""3×3 convolution by Winograd's minimal filtering algorithm F(4×4, 3×3) (Lavin & Gray, 2016).

Each 4×4 output tile is Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for the 6×6 input tile d under it: the same
convolution with 4× fewer multiplications, which become 36 matrix products over all tiles at
once. Written by hand because XLA:CPU has no Winograd convolution and its backward-filter
convolution is slower; `conv.conv2d` uses this form for the kernel gradient on CPU, where it
is measured faster than XLA's and than a matrix product of the input patches
(bench/conv_layer.py, bench/trades_step.py --conv-derivative, docs/benchmarks.md). The result
differs from the direct convolution only by float rounding (about 1e-5 relative in
float32, against 1e-6).
"""
import jax
import jax.numpy as jnp
import numpy as np

# Interpolation points 0, ±1, ±2 and ∞.
_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float32)


def _transform_taps(x, axis: int, tiles: int):
  """Bᵀ applied along `axis` to every 6-long window at stride 4, as a new leading axis of 6:
  the windows are read as 6 strided slices, so no tile is copied out."""
  taps = [jax.lax.slice_in_dim(x, a, a + 4 * (tiles - 1) + 1, 4, axis) for a in range(6)]
  return jnp.stack([sum(float(b) * t for b, t in zip(row, taps) if b) for row in _BT])


def conv3x3(x, kernel):
  """Stride-1 3×3 convolution with 1 pixel of zero padding on each side (NHWC input, HWIO
  kernel): `lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)))`. Computed in
  float32 whatever the inputs' dtype (the transforms' 1/6 and 1/24 lose 0.4% in bfloat16) and
  returned in x's dtype."""
  dtype = x.dtype
  x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
  n, h, w, _ = x.shape
  tiles_h, tiles_w = -(-h // 4), -(-w // 4)
  x = jnp.pad(x, ((0, 0), (1, 4 * tiles_h + 1 - h), (1, 4 * tiles_w + 1 - w), (0, 0)))
  # [6 (columns), 6 (rows), N, tiles_h, tiles_w, C]
  tiles = _transform_taps(_transform_taps(x, 1, tiles_h), 3, tiles_w)
  u = jnp.einsum("ia,jb,abck->jick", _G, _G, kernel)
  products = jnp.einsum("jinhwc,jick->jinhwk", tiles, u)
  y = jnp.einsum("pi,qj,jinhwk->nhpwqk", _AT, _AT, products)
  # One merge per reshape: JAX's sharding rules (a batch sharded on a mesh) take no more.
  y = y.reshape(n, 4 * tiles_h, tiles_w, 4, -1).reshape(n, 4 * tiles_h, 4 * tiles_w, -1)
  return y[:, :h, :w].astype(dtype)
