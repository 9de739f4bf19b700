"""Metric logging for one run: JSON lines and TensorBoard event files in the workdir, written
by process 0 only; progress bars likewise."""
import json
import os

import jax
import numpy as np


def _plain(value):
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(value).item()
  return value


def progress_disabled() -> bool | None:
  """tqdm's `disable` for progress bars: process 0 only, and (None) only when writing to a
  terminal."""
  return True if jax.process_index() != 0 else None


class MetricWriter:
  """Appends to the run's logs from `start_step` on: what a killed run logged after that step
  (the checkpoint it resumes from) is dropped, so a resumed run's logs are the uninterrupted
  run's, with no step twice and none lost."""

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    _keep_through(path, start_step)
    self._jsonl = open(path, "a")
    # TensorBoard hides the events a purge step marks as replaced.
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                      purge_step=start_step + 1)

  def write(self, step: int, kind: str, metrics: dict) -> None:
    """Appends one record {"step", "kind", **metrics}; kind is e.g. "train" or "eval"."""
    if not self.enabled:
      return
    plain = {k: _plain(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": step, "kind": kind, **plain}) + "\n")
    self._jsonl.flush()
    for key, value in plain.items():
      if isinstance(value, (int, float)):
        self._tensorboard.add_scalar(f"{kind}/{key}", value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tensorboard.close()


def _keep_through(path: str, step: int) -> None:
  """Rewrites the JSON lines file at `path` (atomically) with its records up to `step`; a
  line cut short by a kill is dropped too."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError):
        pass
  with open(path + ".tmp", "w") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)
