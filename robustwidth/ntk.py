"""Empirical neural tangent kernels and power-law fits against width (docs/paper.md §3).

The empirical NTK of `f(params, x) -> [N, K]` at `params` is

    Θ(x1, x2) = J(x1) J(x2)ᵀ,   J(x) = ∂f(params, x) / ∂params,

summed over every leaf of `params`. Pass only the trainable parameters: `model_fn_and_params`
splits an NNX model so that BatchNorm statistics are closed over and the model runs in
evaluation mode, as the functional contract requires. Examples must not interact inside `f`
(evaluation mode guarantees this): Jacobians are taken one example at a time.

The API follows neural-tangents' `empirical_ntk_fn` (`trace_axes`, `diagonal_axes`, the two
implementations) with one difference: a traced axis is summed, a true trace, where
neural-tangents divides by the traced axes' size. Divide by K to compare with it.

  f, params = ntk.model_fn_and_params(model)
  kernel = ntk.empirical_ntk(f, params, x1, x2)                   # [N1, N2], traced over K
  per_example = ntk.empirical_ntk(f, params, x1, diagonal_axes=(0,))   # Θ(x_i, x_i), [N1]
  ntk.fit_power_law(widths, traces)["slope"]

Input-gradient norms and local Lipschitz estimates are defined in `robustwidth.lipschitz`;
`ntk.input_gradient_norm` is the same function under the name the functional contract made
stable for users (README, "The pure API"), kept so their code does not break.
"""
import functools
import string
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from scipy import stats

from robustwidth import validation
from robustwidth.lipschitz import input_gradient_norm  # noqa: F401 (the stable public name)
from robustwidth.models import functional

IMPLEMENTATIONS = ("jacobian_contraction", "ntk_vector_products")


def model_fn_and_params(model: nnx.Module) -> tuple[Callable, nnx.State]:
  """(f, params) for `empirical_ntk` from an NNX model: `params` holds its nnx.Param variables
  only, and `f(params, x)` runs the model in evaluation mode with every other variable
  (BatchNorm running statistics) fixed at its current value."""
  graphdef, params, model_state = functional.split(model)

  def f(p, x):
    return functional.apply(graphdef, p, model_state, x, train=False)[0]

  return f, params


def _canonical_axes(name: str, axes: Sequence[int], ndim: int) -> tuple[int, ...]:
  canonical = []
  for axis in axes:
    if not -ndim <= axis < ndim:
      raise ValueError(f"{name} entry {axis} is out of range for f's output of rank {ndim}; "
                       f"use axes in [{-ndim}, {ndim - 1}].")
    canonical.append(axis % ndim)
  if len(set(canonical)) != len(canonical):
    raise ValueError(f"{name}={tuple(axes)} names an axis twice.")
  return tuple(sorted(canonical))


def _check_ntk_args(f, params, x1, x2, trace_axes, diagonal_axes, implementation, batch_size):
  validation.check_choice("implementation", implementation, IMPLEMENTATIONS)
  if batch_size is not None:
    validation.check_positive_int("batch_size", batch_size)
  out1 = jax.eval_shape(f, params, x1)
  if out1.ndim < 1 or out1.shape[0] != x1.shape[0]:
    raise ValueError(f"f(params, x1) must return a batch [N, ...] with N = {x1.shape[0]}, "
                     f"got shape {out1.shape}.")
  if x2 is not None:
    out2 = jax.eval_shape(f, params, x2)
    if out2.shape != (x2.shape[0],) + out1.shape[1:]:
      raise ValueError(f"f(params, x2) must return {(x2.shape[0],) + out1.shape[1:]} to match "
                       f"f(params, x1), got {out2.shape}.")
  trace = _canonical_axes("trace_axes", trace_axes, out1.ndim)
  diagonal = _canonical_axes("diagonal_axes", diagonal_axes, out1.ndim)
  if set(trace) & set(diagonal):
    raise ValueError(f"An axis cannot be both traced and diagonal (trace_axes={trace_axes}, "
                     f"diagonal_axes={diagonal_axes}).")
  if 0 in trace:
    raise ValueError("trace_axes cannot contain the batch axis 0; for Θ(x_i, x_i) per example "
                     "use diagonal_axes=(0,).")
  if 0 in diagonal and x2 is not None and x2.shape[0] != x1.shape[0]:
    raise ValueError(f"diagonal_axes=(0, ...) pairs x1[i] with x2[i], but x1 and x2 have "
                     f"{x1.shape[0]} and {x2.shape[0]} examples.")
  return out1, trace, diagonal


def _subscripts(ndim: int, trace: tuple[int, ...], diagonal: tuple[int, ...]):
  """Einsum letters for f(x1)'s and f(x2)'s output axes, and for the kernel's axes.

  Kernel axes follow the output axes in order: a traced axis is absent, a diagonal one appears
  once, any other twice (x1's, then x2's), as in neural-tangents.
  """
  first, second, kernel = "", "", ""
  for axis in range(ndim):
    a, b = string.ascii_letters[2 * axis], string.ascii_letters[2 * axis + 1]
    if axis in trace or axis in diagonal:
      b = a
    first, second = first + a, second + b
    if axis not in trace:
      kernel += a if axis in diagonal else a + b
  return first, second, kernel


def _example_jacobian(f, params, xi, out):
  """∂f(x_i) / ∂params for one example x_i (no batch axis), by one vjp per output: a pytree
  like `params` with leaves [*out[1:], *leaf.shape]."""
  rest = out.shape[1:]
  size = int(np.prod(rest))
  _, vjp = jax.vjp(lambda p: f(p, xi[None])[0], params)
  basis = jnp.eye(size, dtype=out.dtype).reshape((size,) + rest)
  rows = jax.vmap(vjp)(basis)[0]
  return jax.tree.map(lambda r: r.reshape(rest + r.shape[1:]), rows)


def _per_example_jacobians(f, params, x, out):
  """Leaves [N, *out[1:], *leaf.shape]: the Jacobians of every example of x."""
  return jax.vmap(lambda xi: _example_jacobian(f, params, xi, out))(x)


def _jacobian_contraction(f, params, out, trace, diagonal):
  """(prepare, block): `prepare(x1)` forms J(x1) per example by reverse mode; `block` forms
  J(x2) and contracts the two over the parameters leaf by leaf. Memory ~ (N1 + N2)·K·P, the
  contraction N1·N2·K²·P flops."""
  first, second, kernel = _subscripts(out.ndim, trace, diagonal)

  def prepare(x1):
    return _per_example_jacobians(f, params, x1, out)

  def block(j1, x1, x2):
    j2 = j1 if x2 is x1 else _per_example_jacobians(f, params, x2, out)
    total = 0
    for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2)):
      param = string.ascii_letters[2 * out.ndim:a.ndim + out.ndim]
      total = total + jnp.einsum(f"{first}{param},{second}{param}->{kernel}", a, b,
                                 precision=jax.lax.Precision.HIGHEST)
    return total

  return prepare, block


def _ntk_vector_products(f, params, out, trace, diagonal):
  """(prepare, block): Θ column by column. `prepare(x1)` linearizes f at x1; `block`, for
  each output e of f at x2_j, takes a vjp for J(x2_j)ᵀ e and a jvp of f at x1 along it for
  the column J(x1) J(x2_j)ᵀ e. J(x1) is never formed and nothing is contracted over the
  parameters: N1·N2·K forward-mode example passes instead."""
  first, second, kernel = _subscripts(out.ndim, trace, diagonal)
  m = out.ndim - 1

  def prepare(x1):
    jvp_rows = jax.linearize(lambda p: f(p, x1), params)[1]
    for _ in range(m):
      jvp_rows = jax.vmap(jvp_rows)
    return jvp_rows

  def block(jvp_rows, x1, x2):
    # Axes: N2, rest(x2), N1, rest(x1); zip them to N1, N2, then (x1, x2) per output axis.
    full = jax.vmap(lambda xj: jvp_rows(_example_jacobian(f, params, xj, out)))(x2)
    full = jnp.transpose(full, [m + 1, 0] + [i for d in range(m) for i in (m + 2 + d, 1 + d)])
    return jnp.einsum("".join(a + b for a, b in zip(first, second)) + "->" + kernel, full)

  return prepare, block


def _chunks(x, batch_size):
  """[ceil(N / b), b, ...]; the last chunk is padded with copies of the last example."""
  count = -(-x.shape[0] // batch_size)
  pad = count * batch_size - x.shape[0]
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
  return x.reshape((count, batch_size) + x.shape[1:])


def _kernel(f, method, out, trace, diagonal, batch_size, params, x1, x2):
  """empirical_ntk on arrays one device holds; x2=None means x2 = x1."""
  inner_diagonal = tuple(axis for axis in diagonal if axis != 0)
  prepare, block = method(f, params, out, trace, inner_diagonal)
  symmetric = x2 is None
  x2 = x1 if symmetric else x2

  def pair(a, b):
    return block(prepare(a), a, b)

  if 0 in diagonal:
    # Θ(x1_i, x2_i) one example at a time: a 1 × 1 block per pair.
    def paired(a, b):
      def one(ai, bi):
        ai = ai[None]
        return pair(ai, ai if symmetric else bi[None])[0, 0]
      return jax.vmap(one)(a, b)

    if batch_size is None:
      return paired(x1, x2)
    result = jax.lax.map(lambda ab: paired(*ab), (_chunks(x1, batch_size),
                                                  _chunks(x2, batch_size)))
    return result.reshape((-1,) + result.shape[2:])[:x1.shape[0]]

  if batch_size is None:
    return pair(x1, x1 if symmetric else x2)
  chunks2 = _chunks(x2, batch_size)

  def row(a):  # One chunk of x1 against every chunk of x2, x1's side prepared once.
    prepared = prepare(a)
    return jax.lax.map(lambda b: block(prepared, a, b), chunks2)

  result = jax.lax.map(row, _chunks(x1, batch_size))      # [C1, C2, b, b, ...]
  result = jnp.moveaxis(result, 2, 1)
  result = result.reshape((result.shape[0] * batch_size, result.shape[2] * batch_size)
                          + result.shape[4:])
  return result[:x1.shape[0], :x2.shape[0]]


def _batch_sharding(x):
  """(mesh, mesh axes of x's batch axis) when x lives on a device mesh, else (None, None).

  Only an Explicit mesh axis says how x is sharded; on Auto axes the batch counts as
  replicated (see `empirical_ntk`).
  """
  sharding = getattr(jax.typeof(x), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty:
    return None, None
  return mesh, sharding.spec[0] if sharding.spec else None


def empirical_ntk(f: Callable, params, x1: jax.Array, x2: jax.Array | None = None, *,
                  trace_axes: Sequence[int] = (-1,), diagonal_axes: Sequence[int] = (),
                  implementation: str = "jacobian_contraction",
                  batch_size: int | None = None) -> jax.Array:
  """The empirical NTK Θ(x1, x2) = J(x1) J(x2)ᵀ of `f(params, x) -> [N, K]`.

  x2=None means x2 = x1. Axes refer to f's output [N, K]:
    trace_axes=(-1,)                    [N1, N2]       Σ_k Θ_kk (the default)
    trace_axes=()                       [N1, N2, K, K]
    trace_axes=(), diagonal_axes=(-1,)  [N1, N2, K]    Θ_kk only
    diagonal_axes=(0,)                  [N1]           Θ(x1_i, x2_i) only (traced)
  implementation: "jacobian_contraction" forms the per-example Jacobians and contracts them
  over the parameters; "ntk_vector_products" builds Θ column by column from a vjp and a jvp
  and never forms J(x1) (cheaper when N·K² contractions over the parameters dominate).
  batch_size splits x1 and x2 into chunks of that many examples computed one block at a time
  (a `lax.map`), so memory is that of one block; the result is the same.

  Jit-able (f, the axes, implementation and batch_size static). On a device mesh the work
  runs under `jax.shard_map`: a batch sharded over Explicit mesh axes (`jax.make_mesh`'s
  default) is computed in parallel, each device its rows of Θ against all of x2. A batch on
  Auto axes is computed replicated: XLA's partitioner silently mis-partitions the vmapped
  convolution weight gradients a per-example Jacobian needs (JAX 0.10.2).
  """
  out, trace, diagonal = _check_ntk_args(f, params, x1, x2, trace_axes, diagonal_axes,
                                         implementation, batch_size)
  method = {"jacobian_contraction": _jacobian_contraction,
            "ntk_vector_products": _ntk_vector_products}[implementation]
  compute = functools.partial(_kernel, f, method, out, trace, diagonal, batch_size)
  mesh, batch_axes = _batch_sharding(x1)
  if mesh is None:
    return compute(params, x1, x2)
  rows = PartitionSpec(batch_axes)
  x2_spec = rows if 0 in diagonal else PartitionSpec()
  local = lambda p, a, b: compute(p, a, None if x2 is None and 0 in diagonal else b)
  other = x1 if x2 is None else x2
  if jax.sharding.AxisType.Explicit in mesh.axis_types:
    other = jax.sharding.reshard(other, NamedSharding(mesh, x2_spec))
  return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), rows, x2_spec),
                       out_specs=rows, check_vma=False)(params, x1, other)


def fit_power_law(widths, values, *, confidence: float = 0.95) -> dict:
  """Least-squares fit of log(value) = slope · log(width) + intercept.

  Every (width, value) pair is one point, so repeated seeds at a width enter the fit and its
  interval. Returns slope, slope_low and slope_high (the `confidence` interval from Student's
  t with n − 2 degrees of freedom), slope_stderr, intercept, r2 and num_points.
  """
  w = np.asarray(widths, np.float64).ravel()
  v = np.asarray(values, np.float64).ravel()
  if w.shape != v.shape:
    raise ValueError(f"widths and values must pair up, got {w.size} widths and "
                     f"{v.size} values.")
  if w.size < 3 or np.unique(w).size < 2:
    raise ValueError(f"A slope with an interval needs at least 3 points at 2 or more widths, "
                     f"got {w.size} points at {np.unique(w).size} widths.")
  if not (np.all(np.isfinite(v)) and np.all(v > 0) and np.all(w > 0)):
    raise ValueError("A log-log fit needs positive, finite widths and values; drop the "
                     "zero or non-finite values first.")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
  lw, lv = np.log(w), np.log(v)
  slope, intercept = np.polyfit(lw, lv, 1)
  residual = lv - (slope * lw + intercept)
  dof = w.size - 2
  centered = np.sum((lw - lw.mean()) ** 2)
  stderr = float(np.sqrt(np.sum(residual ** 2) / dof / centered))
  half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * stderr
  total = np.sum((lv - lv.mean()) ** 2)
  r2 = float(1 - np.sum(residual ** 2) / total) if total > 0 else 1.0
  return {"slope": float(slope), "slope_low": float(slope) - half,
          "slope_high": float(slope) + half, "slope_stderr": stderr,
          "intercept": float(intercept), "r2": r2, "num_points": int(w.size)}
