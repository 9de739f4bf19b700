"""robustwidth.ntk: kernels against brute-force jax.jacrev, and power-law fits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from robustwidth import models, ntk

IMPLS = ntk.IMPLEMENTATIONS


def _model(family, **kwargs):
  settings = dict(width=1, num_classes=3, input_shape=(4, 4, 1), seed=0, base_channels=4,
                  depth=1)
  settings.update(kwargs)
  return models.create_model(family, **settings)


def _inputs(n, seed=1, shape=(4, 4, 1)):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n,) + shape)


def _brute_force(f, params, x1, x2):
  """Σ over parameters of J(x1) J(x2)ᵀ from full-batch jax.jacrev: [N1, N2, K, K]."""
  flat = lambda j: j.reshape(j.shape[:2] + (-1,))

  @jax.jit
  def kernel(params, x1, x2):
    j1 = jax.jacrev(lambda p: f(p, x1))(params)
    j2 = jax.jacrev(lambda p: f(p, x2))(params)
    return sum(jnp.einsum("iap,jbp->ijab", flat(a), flat(b), precision="highest")
               for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2)))

  return kernel(params, x1, x2)


def _relative_error(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.fixture(scope="module")
def cnn():
  f, params = ntk.model_fn_and_params(_model("cnn"))
  x1, x2 = _inputs(5, 1), _inputs(3, 2)
  return f, params, x1, x2, _brute_force(f, params, x1, x2)


@pytest.mark.parametrize("implementation", IMPLS)
def test_every_axes_option_matches_jacrev(cnn, implementation):
  f, params, x1, x2, brute = cnn

  @jax.jit
  def kernels(params, x1, x2):
    kernel = lambda **kw: ntk.empirical_ntk(f, params, x1, x2, implementation=implementation,
                                            **kw)
    return (kernel(trace_axes=()), kernel(), kernel(trace_axes=(), diagonal_axes=(-1,)),
            ntk.empirical_ntk(f, params, x1, implementation=implementation,
                              diagonal_axes=(0,)))

  full, traced, diagonal, per_example = kernels(params, x1, x2)
  assert full.shape == (5, 3, 3, 3) and traced.shape == (5, 3) and per_example.shape == (5,)
  assert _relative_error(full, brute) <= 1e-5
  assert _relative_error(traced, jnp.trace(full, axis1=2, axis2=3)) <= 1e-6
  assert _relative_error(diagonal, jnp.diagonal(brute, axis1=2, axis2=3)) <= 1e-5
  self_kernel = jnp.trace(_brute_force(f, params, x1, x1), axis1=2, axis2=3)
  assert _relative_error(per_example, jnp.diagonal(self_kernel)) <= 1e-5


@pytest.mark.parametrize("implementation", IMPLS)
def test_float64_matches_jacrev_tightly(implementation):
  # A plain-pytree tanh network in float64 (the library's models return float32 logits).
  def f(p, x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"]

  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = {"w1": jax.random.normal(keys[0], (16, 8), jnp.float64) / 4,
              "b1": jnp.zeros(8, jnp.float64),
              "w2": jax.random.normal(keys[1], (8, 3), jnp.float64) / 3}
    x1, x2 = _inputs(4, 1).astype(jnp.float64), _inputs(3, 2).astype(jnp.float64)
    kernel = jax.jit(lambda p, a, b: ntk.empirical_ntk(f, p, a, b, trace_axes=(),
                                                       implementation=implementation))
    result = kernel(params, x1, x2)
    assert result.dtype == jnp.float64
    assert _relative_error(result, _brute_force(f, params, x1, x2)) <= 1e-12


@pytest.mark.parametrize("implementation", IMPLS)
def test_kernel_is_symmetric_and_positive_semidefinite(cnn, implementation):
  f, params, x1, _, _ = cnn
  full = jax.jit(lambda p, x: ntk.empirical_ntk(f, p, x, trace_axes=(),
                                                implementation=implementation))(params, x1)
  gram = np.asarray(jnp.transpose(full, (0, 2, 1, 3)).reshape(15, 15), np.float64)
  np.testing.assert_allclose(gram, gram.T, rtol=1e-5, atol=1e-6 * np.abs(gram).max())
  assert np.linalg.eigvalsh(gram).min() >= -1e-5 * np.abs(gram).max()
  traced = np.asarray(jnp.trace(full, axis1=2, axis2=3))
  assert np.linalg.eigvalsh((traced + traced.T) / 2).min() >= -1e-5 * np.abs(traced).max()


@pytest.mark.parametrize("implementation", IMPLS)
def test_chunked_equals_unchunked(cnn, implementation):
  f, params, x1, x2, _ = cnn

  @jax.jit
  def kernels(params, x1, x2):
    kernel = lambda *xs, **kw: ntk.empirical_ntk(f, params, *xs, trace_axes=(),
                                                 implementation=implementation, **kw)
    return (kernel(x1, x2), kernel(x1, x2, batch_size=2), kernel(x1, diagonal_axes=(0,)),
            kernel(x1, diagonal_axes=(0,), batch_size=2))

  whole, chunked, diagonal, diagonal_chunked = kernels(params, x1, x2)
  assert chunked.shape == whole.shape and diagonal_chunked.shape == diagonal.shape == (5, 3, 3)
  assert _relative_error(chunked, whole) <= 1e-6
  assert _relative_error(diagonal_chunked, diagonal) <= 1e-6


class _DenseBatchNorm(nnx.Module):
  """Dense → BatchNorm → ReLU → Dense: the smallest model with BatchNorm statistics."""

  def __init__(self, rngs):
    self.dense = nnx.Linear(16, 6, rngs=rngs)
    self.bn = nnx.BatchNorm(6, rngs=rngs)
    self.head = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x, train: bool = False):
    out = self.bn(self.dense(x.reshape(x.shape[0], -1)), use_running_average=not train)
    return self.head(jax.nn.relu(out))


def test_batchnorm_statistics_do_not_enter():
  model = _DenseBatchNorm(nnx.Rngs(0))
  # Non-trivial running statistics, so that they change f and would add to a kernel that
  # differentiated them.
  model.bn.mean[...] = jnp.linspace(-0.2, 0.2, 6)
  model.bn.var[...] = jnp.linspace(0.5, 2.0, 6)
  f, params = ntk.model_fn_and_params(model)
  assert {type(v) for _, v in nnx.to_flat_state(params)} == {nnx.Param}
  x1, x2 = _inputs(3, 1), _inputs(2, 2)
  kernel = jax.jit(lambda p, a, b: ntk.empirical_ntk(f, p, a, b, trace_axes=()))(params, x1, x2)
  assert _relative_error(kernel, _brute_force(f, params, x1, x2)) <= 1e-5

  graphdef, _, _ = models.split(model)
  stats = nnx.state(model, nnx.BatchStat)
  f_stats = lambda s, x: models.apply(graphdef, params, s, x, train=False)[0]
  stats_part = _brute_force(f_stats, stats, x1, x2)
  assert float(jnp.max(jnp.abs(stats_part))) > 1e-3 * float(jnp.max(jnp.abs(kernel)))


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_sharded_inputs_under_jit(cnn, axis_type):
  f, params, _, _, _ = cnn
  x = _inputs(8, 3)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
  sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))

  @jax.jit
  def kernels(params, x):
    return (ntk.empirical_ntk(f, params, x, batch_size=3, implementation=IMPLS[1]),
            ntk.empirical_ntk(f, params, x, diagonal_axes=(0,)))

  expected = jnp.trace(_brute_force(f, params, x, x), axis1=2, axis2=3)
  chunked, diagonal = kernels(params, sharded)
  assert _relative_error(chunked, expected) <= 1e-5
  assert _relative_error(diagonal, jnp.diagonal(expected)) <= 1e-5


def test_bad_arguments_name_the_fix(cnn):
  f, params, x1, x2, _ = cnn
  with pytest.raises(ValueError, match="implementation"):
    ntk.empirical_ntk(f, params, x1, implementation="auto")
  with pytest.raises(ValueError, match="batch axis"):
    ntk.empirical_ntk(f, params, x1, trace_axes=(0,))
  with pytest.raises(ValueError, match="both traced and diagonal"):
    ntk.empirical_ntk(f, params, x1, diagonal_axes=(1,))
  with pytest.raises(ValueError, match="out of range"):
    ntk.empirical_ntk(f, params, x1, trace_axes=(2,))
  with pytest.raises(ValueError, match="pairs x1"):
    ntk.empirical_ntk(f, params, x1, x2, diagonal_axes=(0,))
  with pytest.raises(ValueError, match="batch_size"):
    ntk.empirical_ntk(f, params, x1, batch_size=0)


# Power-law fits.

def test_fit_power_law_recovers_the_exponent():
  widths = np.array([1, 2, 4, 8, 16] * 3, float)
  exact = ntk.fit_power_law(widths, 3.0 * widths ** 0.5)
  assert exact["slope"] == pytest.approx(0.5) and exact["intercept"] == pytest.approx(np.log(3))
  assert exact["slope_high"] - exact["slope_low"] == pytest.approx(0.0, abs=1e-9)
  noise = np.exp(np.random.default_rng(0).normal(0, 0.1, widths.size))
  noisy = ntk.fit_power_law(widths, 3.0 * widths ** 0.5 * noise)
  assert noisy["slope_low"] < 0.5 < noisy["slope_high"] and noisy["num_points"] == 15
  with pytest.raises(ValueError, match="positive"):
    ntk.fit_power_law([1, 2, 4], [1.0, 0.0, 2.0])
  with pytest.raises(ValueError, match="at least 3 points"):
    ntk.fit_power_law([1, 2], [1.0, 2.0])
