"""The boundary between stateful Flax NNX modules and the pure functions of the library.

A model is split once into a static `graphdef`, its trainable `params` and the rest of its
state (BatchNorm statistics), and every pure routine works on those three. `logits_fn` builds
the evaluation-mode function `x -> logits` of the functional contract (`attacks.LogitsFn`):
BatchNorm reads its running statistics and nothing the function does can change model state.
"""
import functools
from typing import Any

import jax
from flax import nnx
from jax.tree_util import Partial


def split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """Returns (graphdef, params, model_state); model_state holds everything but nnx.Param."""
  return nnx.split(model, nnx.Param, ...)


def apply(graphdef: nnx.GraphDef, params: nnx.State, model_state: nnx.State, x: jax.Array, *,
          train: bool) -> tuple[jax.Array, nnx.State]:
  """Pure forward pass: returns logits and the model state after it (changed only if `train`)."""
  # copy=True: the merged module owns fresh Variables, so a train-mode pass never mutates the
  # caller's state objects (which may belong to an outer trace).
  model = nnx.merge(graphdef, params, model_state, copy=True)
  logits = model(x, train=train)
  if not train:
    return logits, model_state
  _, _, new_state = split(model)
  return logits, new_state


def _eval_logits(graphdef: nnx.GraphDef, params: Any, model_state: nnx.State,
                 x: jax.Array) -> jax.Array:
  return apply(graphdef, params, model_state, x, train=False)[0]


@functools.lru_cache(maxsize=16)
def _bound_eval_logits(graphdef: nnx.GraphDef) -> functools.partial:
  return functools.partial(_eval_logits, graphdef)


def logits_fn(graphdef: nnx.GraphDef, params: Any, model_state: nnx.State) -> Partial:
  """The contract's evaluation-mode `x -> logits`, as a `jax.tree_util.Partial` whose leaves
  are `params` and `model_state`: a jitted attack takes the weights as arguments instead of
  compiling them in as constants, and models of one architecture (equal graphdefs) share its
  compiled code."""
  return Partial(_bound_eval_logits(graphdef), params, model_state)


def model_logits_fn(model: nnx.Module) -> Partial:
  """`logits_fn` for a live NNX module (a snapshot of its current parameters and state)."""
  return logits_fn(*split(model))


def count_params(params: nnx.State) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))
