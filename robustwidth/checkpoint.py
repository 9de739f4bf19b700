"""Orbax checkpoints of a run: atomic, resumable, keeping the latest and the best.

Each checkpoint holds the train state and a JSON part with the run's configuration and the
evaluation metrics at that step. The best checkpoint is the one with the highest PGD robust
accuracy, as in the paper. Restoring refuses a checkpoint written under a different
configuration, and turns any restore failure into a CheckpointError that says what to do,
rather than starting again from scratch.
"""
import json
import logging
import os

import jax
import orbax.checkpoint as ocp

from robustwidth import config as config_lib

_policy = ocp.checkpoint_managers.preservation_policy


class _NoMetricsNotice(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in record.getMessage()


def hide_no_metrics_notice() -> None:
  """Drops orbax's warning on every save without metrics (epochs without an evaluation are
  expected) from absl's log. The launchers call it; importing this module changes no logging
  setting."""
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _NoMetricsNotice) for f in absl_logger.filters):
    absl_logger.addFilter(_NoMetricsNotice())


_MOVE_ASIDE = ("Move that step's directory out of the checkpoints directory and run again: "
               "the run resumes exactly from the checkpoint before it (or starts afresh if "
               "there is none); nothing was deleted.")


class CheckpointError(RuntimeError):
  """A checkpoint that exists but cannot be used; nothing was changed on disk."""


def _robust_accuracy(metrics) -> float:
  return metrics["robust_accuracy"]


class Checkpoints:

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        best_fn=_robust_accuracy, best_mode="max",
        preservation_policy=_policy.AnyPreservationPolicy([
            _policy.LatestN(1),
            _policy.BestN(get_metric_fn=_robust_accuracy, n=1,
                          keep_checkpoints_without_metrics=False)]),
        enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)),
                      metrics=metrics, force=True)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def meta(self, step: int) -> dict:
    """The JSON part of the checkpoint at `step`: configuration and evaluation metrics."""
    try:
      return self.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore())).meta
    except Exception as error:  # Orbax raises many types; all mean the same to the user.
      raise CheckpointError(
          f"The checkpoint at {os.path.join(self.directory, str(step))} is unreadable "
          f"({type(error).__name__}: {error}). It may be corrupt or incomplete. {_MOVE_ASIDE}"
          ) from error

  def restore(self, step: int, target, config_json: str):
    """Restores (state, meta) at `step` onto `target` (arrays or ShapeDtypeStructs with
    shardings), after checking that it was written under the same configuration."""
    path = os.path.join(self.directory, str(step))
    meta = self.meta(step)
    _check_same_config(json.loads(meta["config"]), json.loads(config_json), path)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))
    except Exception as error:
      raise CheckpointError(
          f"The train state in {path} does not match this run's model and optimizer "
          f"({type(error).__name__}: {error}). It may be corrupt, or from an incompatible "
          f"version. {_MOVE_ASIDE}") from error
    return restored.state, meta

  def close(self) -> None:
    self.manager.close()


def _check_same_config(saved: dict, current: dict, path: str) -> None:
  differences = config_lib.differences(saved, current)
  if differences:
    raise CheckpointError(
        f"The checkpoint at {path} was written by a run with a different configuration "
        f"({config_lib.describe_differences(differences, 'checkpoint')}). Resume with the "
        "original configuration, or use a new --workdir for the new one.")
