"""Metric logging for one run: JSON lines and TensorBoard event files in the workdir, written
by process 0 only."""
import json
import os

import jax
import numpy as np


def _plain(value):
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(value).item()
  return value


class MetricWriter:

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

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
