"""Evaluating a run's weights: PGD over the whole test split (the trainer's per-epoch
evaluation), AutoAttack on the best checkpoint at the end of a run, and restoring a checkpoint
for evaluation.

A restore reads the run directory alone: its checkpoint holds the config and the run's
`experiment.RunSpec`, so no training data is loaded and no other run's record is read, and the
weights come back on one device whatever mesh trained them.

  graphdef, params, model_state, config = evaluation.restore_model("runs/x")
  logits_fn = models.logits_fn(graphdef, params, model_state)
"""
import json
import os
import time

import jax
import ml_collections
from tqdm import tqdm

from robustwidth import attacks, data, experiment, metrics, models, parallel, steps
from robustwidth import config as config_lib
from robustwidth.checkpoint import CheckpointError, Checkpoints
from robustwidth.writers import progress_disabled

_EVAL_KEY_SALT = 0x7E57  # Evaluation keys are fixed per run, so epochs compare like for like.


def eval_key(config: ml_collections.ConfigDict) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), _EVAL_KEY_SALT)


def compile_eval_step(graphdef, config: ml_collections.ConfigDict, state, image_shape, mesh):
  """The PGD evaluation step, compiled for `state`'s weights replicated and a padded
  evaluation batch sharded over `mesh`."""
  replicated, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  padded_batch = config_lib.eval_padded_batch(config, mesh.size)
  return jax.jit(
      steps.make_eval_step(graphdef, experiment.eval_attack(config)),
      in_shardings=(replicated, replicated, batch, replicated), out_shardings=replicated,
  ).lower(state.params, state.model_state,
          experiment.batch_spec(padded_batch, image_shape, batch, mask=True),
          jax.random.PRNGKey(0)).compile()


def pgd_evaluation(eval_step, state, test_split: data.Split, config: ml_collections.ConfigDict,
                   mesh, key: jax.Array) -> dict:
  """PGD evaluation on the whole test split: the three accuracies, counts, probe."""
  totals = {}
  batches = data.eval_batches(test_split, global_batch=config.eval.batch_size,
                              padded_batch=config_lib.eval_padded_batch(config, mesh.size),
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  bar = tqdm(batches, desc="  eval", unit="batch", leave=False, disable=progress_disabled(),
             total=-(-len(test_split) // config.eval.batch_size), mininterval=1.0)
  for index, batch in enumerate(bar):
    counts = eval_step(steps.evaluated_params(state), state.model_state,
                       parallel.put_batch(batch, mesh), jax.random.fold_in(key, index))
    totals = metrics.add_counts(totals, jax.device_get(counts))
  lipschitz = float(totals.pop("lipschitz_sum")) / max(int(totals["count"]), 1)
  return {**metrics.fractions(totals), "lipschitz_probe": lipschitz}


def autoattack(graphdef, state: steps.TrainState, test_split: data.Split,
               config: ml_collections.ConfigDict, key: jax.Array) -> dict:
  """AutoAttack (standard) over the first eval.autoattack_examples test points, of the weights
  the PGD evaluation chose the best of (the moving average if the run keeps one), as fractions
  like the PGD evaluation's."""
  count = config.eval.autoattack_examples
  if count > len(test_split):
    raise ValueError(f"config.eval.autoattack_examples = {count} exceeds the "
                     f"{len(test_split)} test examples; lower it.")
  params, model_state = jax.device_get((steps.evaluated_params(state), state.model_state))
  start = time.time()
  _, report = attacks.autoattack(
      models.logits_fn(graphdef, params, model_state),
      data.to_float(test_split.images[:count]), test_split.labels[:count],
      key=key, eps=config.attack.eps, norm=config.attack.norm,
      batch_size=config.eval.batch_size)
  return {"autoattack_examples": count,
          "autoattack_natural_accuracy": report["clean_accuracy"],
          "autoattack_accuracy": report["robust_accuracy"],
          "autoattack_stability": report["perturbation_stability"],
          "autoattack_accuracy_after": report["accuracy_after"],
          "autoattack_time_s": time.time() - start}


def restore_train_state(workdir: str, which: str = "best"):
  """(graphdef, train state, config) of a run's best or latest checkpoint, on the default
  device."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"There is no run directory {workdir}; check --workdir.")
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"))
  step = checkpoints.best_step() if which == "best" else checkpoints.latest_step()
  if step is None:
    raise CheckpointError(f"No checkpoint found in {workdir}/checkpoints; train the run first "
                          "(python -m launch.main --config ... --workdir ...).")
  meta = checkpoints.meta(step)
  config = ml_collections.ConfigDict(json.loads(meta["config"]))
  spec = (experiment.RunSpec.from_json(meta["spec"]) if "spec" in meta
          else _spec_of_older_checkpoint(config, workdir))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                        experiment.abstract_train_state(config, spec))
  state, _ = checkpoints.restore(step, target, meta["config"])
  checkpoints.close()
  return experiment.abstract_model(config, spec)[0], state, config


def restore_model(workdir: str, which: str = "best"):
  """(graphdef, params, model_state, config) of a run's best or latest checkpoint; params are
  the weights the run evaluated (the moving average if it kept one)."""
  graphdef, state, config = restore_train_state(workdir, which)
  return graphdef, steps.evaluated_params(state), state.model_state, config


def _spec_of_older_checkpoint(config: ml_collections.ConfigDict, workdir: str
                              ) -> experiment.RunSpec:
  """The spec of a checkpoint written before checkpoints held theirs. The train state's
  shapes depend only on the data's image shape and classes, which `data.INFO` gives; an
  adaptive rule's r0 is taken from the run's own record."""
  reference_ratio = None
  if config.war.rule == "adaptive" and config.war.reference_ratio == 0:
    path = os.path.join(workdir, "record.json")
    if not os.path.exists(path):
      raise CheckpointError(
          f"The checkpoints in {workdir} predate saved run specs, and the run's adaptive WAR "
          f"rule took r0 from its reference run, which its record {path} would name; without "
          "that record, finish the run with the current code first (it resumes from the "
          "checkpoint) and evaluate it then.")
    with open(path) as f:
      reference_ratio = json.load(f)["war_reference_ratio"]
  return experiment.spec_from_info(config, reference_ratio)
