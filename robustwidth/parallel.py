"""Data parallelism over all devices of all hosts: one 'data' mesh axis, the batch sharded
along it, parameters and optimizer state replicated.

With these shardings `jax.jit` partitions the step itself (BatchNorm statistics and losses are
computed over the global batch), so 1 device and N devices compute the same function.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh() -> Mesh:
  """All devices on one 'data' axis. Auto axes: XLA propagates the batch sharding through the
  step (with Explicit axes, jax 0.12 refuses the transpose of an indexing gather inside
  optax's cross-entropy on a sharded batch)."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows of a global batch → one global array per field, sharded over 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))
