"""train_and_evaluate(config, workdir): one adversarial-training run, resumable.

The stateful shell around the pure steps: it loads data, builds the run's objects
(`experiment`), jits the steps over a data-parallel mesh (state replicated and donated, batch
sharded), evaluates on the whole test split every `eval.every_epochs` (`evaluation`), keeps the
latest and the best (PGD robust accuracy) checkpoints, each with the config and the run's
`experiment.RunSpec`, logs to JSONL and TensorBoard, and writes `record.json`, the run's result.

Started again on the same workdir it resumes from the latest checkpoint, at the exact step,
data order and random keys, with the epoch's metric sums so far and metrics.jsonl cut back to
the checkpoint; a finished run returns its record without training again. One process writes
a workdir at a time (an OS lock on WORKDIR/lock). A step whose loss, logits or parameters are
not finite stops the run with NonFiniteError: a diverged run never writes a record.
"""
import contextlib
import dataclasses
import fcntl
import json
import os
import time

import jax
import ml_collections
from tqdm import tqdm

from robustwidth import config as config_lib
from robustwidth import data, evaluation, experiment, models, parallel, steps, war
from robustwidth.checkpoint import CheckpointError, Checkpoints
from robustwidth.writers import MetricWriter, progress_disabled


class NonFiniteError(FloatingPointError):
  """A training step produced NaN or infinite values: the run diverged."""


class WorkdirBusyError(RuntimeError):
  """Another process is writing the workdir."""


def reference_ratio(config: ml_collections.ConfigDict) -> float | None:
  """r0 for the adaptive WAR rule when the config leaves it to the thin reference run's
  record (None otherwise). Read once at start-up and saved with the run's spec."""
  if config.war.rule != "adaptive" or config.war.reference_ratio > 0:
    return None
  path = os.path.join(config.war.reference_run, "record.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"The adaptive WAR rule reads r0 from the thin reference run's record {path}, which "
        "does not exist: train that run first (a width study trains it first), or set "
        "config.war.reference_ratio.")
  with open(path) as f:
    return json.load(f)["war_ratio"]


class _Run:
  """Everything one run needs, built once: data, model, optimizer, jitted steps, state."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    config_lib.validate(config, jax.device_count())
    self.config, self.workdir = config, workdir
    self.config_json = config.to_json(sort_keys=True)
    self.train_split = data.first(
        data.load(config.data.name, "train", data_dir=config.data.data_dir),
        config.data.train_examples)
    self.test_split = data.load(config.data.name, "test", data_dir=config.data.data_dir)
    self.extra_per_batch = experiment.extra_per_batch(config)
    self.extra_split = (data.load_extra(config.data.extra_path, self.train_split)
                        if self.extra_per_batch else None)
    self.spec = experiment.RunSpec(
        self.train_split.image_shape, self.train_split.num_classes,
        data.steps_per_epoch(self.train_split, config.train.batch_size - self.extra_per_batch),
        reference_ratio(config))
    self.steps_per_epoch = self.spec.steps_per_epoch
    self.total_steps = self.steps_per_epoch * config.train.epochs
    self.graphdef, params, model_state = models.split(experiment.create_model(
        config, self.spec.image_shape, self.spec.num_classes))
    self.num_params = models.count_params(params)
    self.schedule = experiment.learning_rate_schedule(config, self.spec)
    self.optimizer = experiment.optimizer(config, self.spec)
    self.settings = experiment.train_settings(config, self.spec)
    self.mesh = parallel.data_mesh()
    self.state = parallel.replicate(
        experiment.train_state(config, self.spec, params, model_state), self.mesh)
    self.eval_key = evaluation.eval_key(config)

  def compile(self) -> None:
    """Compiles both steps ahead of time: compile time is measured apart from training
    throughput, and a step can never silently recompile."""
    replicated, batch = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
    start = time.time()
    self.train_step = jax.jit(
        steps.make_train_step(self.graphdef, self.optimizer, self.settings),
        in_shardings=(replicated, batch), out_shardings=(replicated, replicated),
        donate_argnums=0).lower(self.state, experiment.batch_spec(
            self.config.train.batch_size, self.spec.image_shape, batch)).compile()
    self.eval_step = evaluation.compile_eval_step(self.graphdef, self.config, self.state,
                                                  self.spec.image_shape, self.mesh)
    self.compile_time_s = time.time() - start

  def evaluate(self, state) -> dict:
    return evaluation.pgd_evaluation(self.eval_step, state, self.test_split, self.config,
                                     self.mesh, self.eval_key)


def _log_step(writer: MetricWriter, step: int, step_metrics: dict, sums: dict) -> dict:
  """Fetches the metrics of the step that ended at `step`, stops the run if they are not
  finite, logs λ and the loss terms; returns the epoch's sums. Sums are Python floats, so an
  epoch resumed from sums saved as JSON adds up exactly as an uninterrupted one."""
  step_metrics = jax.device_get(step_metrics)
  _check_finite(step, step_metrics.pop("finite"))
  writer.write(step, "step", {k: step_metrics[k] for k in
                              ("beta", "loss", "natural_loss", "robust_term")})
  return {k: sums.get(k, 0.0) + float(v) for k, v in step_metrics.items()}


def _check_finite(step: int, finite: dict) -> None:
  bad = [name for name, ok in finite.items() if not ok]
  if bad:
    raise NonFiniteError(
        f"Training step {step} produced NaN or infinite {' and '.join(bad)}: the run diverged "
        "and was stopped before writing a record. Try a lower config.train.lr (or "
        "config.train.beta), and check the data for bad values; the checkpoints kept are "
        "all from before this step.")


def _save(run: _Run, checkpoints: Checkpoints, state, meta: dict, eval_metrics=None):
  checkpoints.save(int(jax.device_get(state.step)), state,
                   {**meta, "config": run.config_json, "spec": run.spec.to_json(),
                    "eval": eval_metrics}, eval_metrics)


@dataclasses.dataclass
class _Clock:
  """Training-step time and wall time, carried across resumptions in checkpoint metadata."""
  train_s: float
  wall_before_s: float
  wall_start: float = dataclasses.field(default_factory=time.time)

  def times(self) -> dict:
    return {"train_time_s": self.train_s,
            "wall_time_s": self.wall_before_s + time.time() - self.wall_start}


def _train_epoch(run: _Run, state, batches, writer: MetricWriter, checkpoints: Checkpoints,
                 meta: dict, clock: _Clock, first: int, last: int, sums: dict):
  """Steps `first` to `last`, adding to `sums` (the epoch's steps before `first`, when
  resuming mid-epoch); returns the state and the epoch's mean step metrics.

  A mid-epoch checkpoint is written after its step's metrics are checked and logged, and holds
  the epoch's sums so far."""
  config = run.config
  pending, start = None, time.time()
  bar = tqdm(total=(last - first) * config.train.batch_size, unit="img", unit_scale=True,
             desc=f"epoch {last // run.steps_per_epoch}/{config.train.epochs}", leave=False,
             disable=progress_disabled(), mininterval=1.0)
  for step in range(first, last):
    state, step_metrics = run.train_step(state, parallel.put_batch(next(batches), run.mesh))
    if pending is not None:  # Fetch one step behind, so dispatch runs ahead by one.
      sums = _log_step(writer, step, pending, sums)
    pending = step_metrics
    bar.update(config.train.batch_size)
    every = config.train.checkpoint_every_steps
    if every and (step + 1) % every == 0 and step + 1 != last:
      sums, pending = _log_step(writer, step + 1, pending, sums), None
      jax.block_until_ready(state)
      clock.train_s += time.time() - start
      start = time.time()
      _save(run, checkpoints, state, {**meta, **clock.times(), "epoch_sums": sums})
  sums = _log_step(writer, last, pending, sums)
  bar.close()
  clock.train_s += time.time() - start
  return state, {k: v / run.steps_per_epoch for k, v in sums.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes, or reuses) the run in `workdir`; returns its record."""
  record_path = os.path.join(workdir, "record.json")
  existing = _finished_record(record_path, config)
  if existing is not None:
    return existing
  with _exclusive(workdir):
    return _train(config, workdir, record_path)


@contextlib.contextmanager
def _exclusive(workdir: str):
  """Holds an exclusive lock on WORKDIR/lock (process 0: every process of a multi-host run
  writes the same workdir). The OS releases it when the process ends, killed or not, so it
  can never be left stuck."""
  if jax.process_index() != 0:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "lock")
  with open(path, "a") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(
          f"{workdir} is being written by another run (it holds the lock on {path}). Wait for "
          "that run to finish, or use another --workdir. A killed run releases the lock by "
          "itself: there is nothing to delete.") from None
    yield


def _train(config: ml_collections.ConfigDict, workdir: str, record_path: str) -> dict:
  run = _Run(config, workdir)
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"))
  state, meta = run.state, {"train_time_s": 0.0, "wall_time_s": 0.0, "epoch_train": {}}
  latest = checkpoints.latest_step()
  if latest is not None:  # Restored before compiling, so a bad checkpoint fails at once.
    state, meta = checkpoints.restore(latest, run.state, run.config_json)
    state = parallel.replicate(state, run.mesh)
    if jax.process_index() == 0:
      print(f"Resuming {workdir} from step {latest}.", flush=True)
  run.compile()
  start_step = int(jax.device_get(state.step))
  writer = MetricWriter(workdir, start_step)
  clock = _Clock(meta["train_time_s"], meta["wall_time_s"])
  sums = meta.pop("epoch_sums", {})
  batches = data.train_batches(run.train_split, global_batch=config.train.batch_size,
                               seed=config.seed, start_step=start_step,
                               process_index=jax.process_index(),
                               process_count=jax.process_count(), extra=run.extra_split,
                               extra_per_batch=run.extra_per_batch)
  for epoch in range(start_step // run.steps_per_epoch, config.train.epochs):
    first = max(start_step, epoch * run.steps_per_epoch)
    last = (epoch + 1) * run.steps_per_epoch
    state, train_means = _train_epoch(run, state, batches, writer, checkpoints, meta, clock,
                                      first, last, sums)
    sums = {}
    writer.write(last, "train", {**train_means, "epoch": epoch + 1,
                                 "learning_rate": float(run.schedule(last - 1))})
    eval_metrics = None
    if (epoch + 1) % config.eval.every_epochs == 0 or epoch + 1 == config.train.epochs:
      eval_metrics = run.evaluate(state)
      writer.write(last, "eval", {**eval_metrics, "epoch": epoch + 1})
    meta = {**meta, **clock.times(), "epoch_train": train_means, "epoch": epoch + 1}
    _save(run, checkpoints, state, meta, eval_metrics)
    _print_epoch(epoch + 1, config.train.epochs, train_means, eval_metrics)
  writer.close()
  record = _record(run, checkpoints, state, meta)
  if config.eval.autoattack_examples:
    best, _ = checkpoints.restore(checkpoints.best_step(), run.state, run.config_json)
    record.update(evaluation.autoattack(run.graphdef, best, run.test_split, config,
                                        run.eval_key))
  checkpoints.close()
  if jax.process_index() == 0:
    with open(record_path, "w") as f:
      json.dump(record, f, indent=1)
  return record


def _print_epoch(epoch: int, epochs: int, train: dict, evaluation: dict | None) -> None:
  if progress_disabled():
    return
  line = (f"epoch {epoch}/{epochs}  loss {train['loss']:.4f}  beta {train['beta']:.3g}  "
          f"train_acc {train['train_accuracy']:.4f}")
  if evaluation:
    line += (f"  | test nat {evaluation['natural_accuracy']:.4f}  "
             f"rob {evaluation['robust_accuracy']:.4f}  "
             f"stab {evaluation['perturbation_stability']:.4f}  "
             f"lip {evaluation['lipschitz_probe']:.4g}")
  print(line, flush=True)


def _record(run: _Run, checkpoints: Checkpoints, state, meta: dict) -> dict:
  """The run's result: the best checkpoint's evaluation (as the paper reports), and the rest."""
  config = run.config
  best_step = checkpoints.best_step()
  best_meta = checkpoints.meta(best_step)
  final_war = jax.device_get(state.war)
  rule = run.settings.rule
  return {
      "family": config.model.family, "depth": config.model.depth,
      "width": config.model.width, "base_channels": config.model.base_channels,
      "params": run.num_params, "dataset": config.data.name, "seed": config.seed,
      "method": config.train.method, "norm": config.attack.norm, "eps": config.attack.eps,
      "beta": float(final_war.beta), "beta_initial": rule.initial_beta(),
      "beta_rule": rule.describe(), "war_ratio": war.measured_ratio(final_war),
      "war_reference_ratio": rule.reference_ratio,
      **best_meta["eval"], "best_epoch": best_meta["epoch"], "best_step": best_step,
      "evaluated_weights": "ema" if run.settings.ema_decay else "raw",
      "epochs": config.train.epochs,
      "train_lipschitz_probe": meta["epoch_train"]["lipschitz_probe"],
      "train_accuracy": meta["epoch_train"]["train_accuracy"],
      "train_time_s": meta["train_time_s"], "wall_time_s": meta["wall_time_s"],
      "compile_time_s": run.compile_time_s,
      "images_per_s": run.total_steps * config.train.batch_size / max(meta["train_time_s"],
                                                                       1e-9),
      "config": json.loads(run.config_json),
  }


def _finished_record(record_path: str, config: ml_collections.ConfigDict) -> dict | None:
  """The record of a finished run of this configuration (a study's grid is not part of a
  run's identity, so an extended study reuses its runs), None if the run has not finished."""
  if not os.path.exists(record_path):
    return None
  try:
    with open(record_path) as f:
      record = json.load(f)
    saved = record["config"]
  except (ValueError, KeyError, TypeError) as error:
    raise CheckpointError(
        f"{record_path} is damaged ({type(error).__name__}: {error}). Move it aside and run "
        "again: the run's final checkpoint writes it anew without training.") from None
  differences = config_lib.differences(saved, json.loads(config.to_json(sort_keys=True)))
  if differences:
    raise CheckpointError(
        f"{record_path} holds a finished run with a different configuration "
        f"({config_lib.describe_differences(differences, 'record')}). Use a new --workdir for "
        "the new configuration; nothing was deleted.")
  return record
