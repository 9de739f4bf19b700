"""train_and_evaluate end to end: the launcher, reuse, exact resume after SIGKILL, 1 vs 8
devices, two processes through jax.distributed, and the errors users meet."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import ml_collections
import numpy as np
import pytest

from configs import cifar10_methods, smoke
from robustwidth import config as config_lib
from robustwidth import train
from robustwidth.checkpoint import CheckpointError, Checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 1437 // 64  # digits train split, smoke batch size
# Mid-epoch checkpoints for the SIGKILL test, and the adaptive WAR rule (its λ moves every
# step, from 6 toward ~11 here), so that resuming must restore the rule's running state too.
TRADES = ("train.checkpoint_every_steps=5", "war.rule=adaptive", "war.reference_ratio=0.05")


def _command(workdir, overrides, flags=()):
  return [sys.executable, "-m", "launch.main", "--config", "configs/smoke.py",
          "--workdir", str(workdir), *[f"--config.{o}" for o in overrides], *flags]


def _env(devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(REPO / ".cache" / "jax"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1"}


def _launch(workdir, overrides=TRADES, devices=2, flags=()):
  result = subprocess.run(_command(workdir, overrides, flags), cwd=REPO, env=_env(devices),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _record(workdir) -> dict:
  with open(pathlib.Path(workdir) / "record.json") as f:
    return json.load(f)


def _params(workdir):
  return jax.device_get(train.restore_model(str(workdir), which="latest")[1])


EVAL_KEYS = ("natural_accuracy", "robust_accuracy", "perturbation_stability", "correct",
             "robust", "stable", "lipschitz_probe", "war_ratio", "best_step", "beta")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  """One uninterrupted TRADES smoke run on 2 devices: the reference the other runs match."""
  workdir = tmp_path_factory.mktemp("baseline")
  result = _launch(workdir)
  return workdir, result


def test_smoke_run_writes_its_outputs_and_a_finished_run_is_reused(baseline):
  workdir, result = baseline
  assert "epoch 2/2" in result.stdout
  record = _record(workdir)
  for key in ("width", "beta", "beta_rule", "natural_accuracy", "robust_accuracy",
              "perturbation_stability", "params", "lipschitz_probe", "compile_time_s"):
    assert key in record
  assert record["beta_rule"].startswith("adaptive(beta0=6, r0=0.05") and record["count"] == 360
  assert 7 < record["beta"] < 100  # The adaptive rule enlarged λ.
  assert record["natural_accuracy"] > 0.25  # Two epochs learn something on digits.
  logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  kinds = [entry["kind"] for entry in logged]
  assert kinds.count("train") == 2 and kinds.count("eval") == 2
  betas = [entry["beta"] for entry in logged if entry["kind"] == "step"]
  assert len(betas) == 2 * STEPS_PER_EPOCH and betas[0] == 6.0 and betas[-1] > betas[0]
  assert any(p.name.startswith("events.out.tfevents")
             for p in (workdir / "tensorboard").iterdir())
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 2 * STEPS_PER_EPOCH and record["best_step"] in steps
  start = time.time()
  again = _launch(workdir)
  assert "epoch" not in again.stdout and _record(workdir) == record
  assert time.time() - start < 60


def _kill_after_step_5(workdir, overrides):
  """Starts a run (checkpointing every 5 steps) and SIGKILLs it once step 5 is saved."""
  process = subprocess.Popen(_command(workdir, overrides), cwd=REPO, env=_env(2),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first_checkpoint = workdir / "checkpoints" / "5"
  deadline = time.time() + 300
  while not first_checkpoint.exists():
    assert process.poll() is None and time.time() < deadline, "run ended before step 5"
    time.sleep(0.01)
  os.kill(process.pid, signal.SIGKILL)
  process.wait()


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(baseline, tmp_path):
  reference, _ = baseline
  workdir = tmp_path / "killed"
  _kill_after_step_5(workdir, TRADES)
  latest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert latest % STEPS_PER_EPOCH and not (workdir / "record.json").exists()
  resumed = _launch(workdir)
  assert f"Resuming {workdir} from step {latest}" in resumed.stdout
  expected, got = _record(reference), _record(workdir)
  assert {k: got[k] for k in EVAL_KEYS} == {k: expected[k] for k in EVAL_KEYS}
  chex.assert_trees_all_equal(_params(workdir), _params(reference))


def test_two_processes_through_jax_distributed_match_one_process(baseline, tmp_path):
  # launch/multihost.sh local starts two processes with one device each: the same 2-device
  # mesh as the baseline's single process, so every per-device computation is the same.
  reference, _ = baseline
  workdir = tmp_path / "two_processes"
  overrides = [f"--config.{o}" for o in TRADES]
  result = subprocess.run(["bash", "launch/multihost.sh", "local", "2", "configs/smoke.py",
                           str(workdir), *overrides], cwd=REPO,
                          env={**_env(1), "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.count("epoch 2/2") == 1  # Only process 0 logs.
  expected, got = _record(reference), _record(workdir)
  for key in EVAL_KEYS:
    assert got[key] == pytest.approx(expected[key], rel=1e-6), key
  chex.assert_trees_all_close(_params(workdir), _params(reference), atol=1e-6)


def test_eight_devices_train_what_one_device_trains(tmp_path):
  # Standard training: TRADES' sign() of near-zero inner gradients makes attack-trained runs
  # agree only statistically across shardings (see tests/test_steps.py).
  overrides = ("train.method=standard",)
  _launch(tmp_path / "one", overrides, devices=1)
  _launch(tmp_path / "eight", overrides, devices=8)
  one, eight = _record(tmp_path / "one"), _record(tmp_path / "eight")
  for key in EVAL_KEYS:
    assert eight[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
  chex.assert_trees_all_close(_params(tmp_path / "eight"), _params(tmp_path / "one"),
                              atol=1e-5, rtol=1e-4)


# MART with AWP from epoch 2 and a moving average of the weights: the train state then also
# holds the average, and the step's program changes with the step number.
METHODS = ("train.method=mart", "train.awp_gamma=0.005", "train.awp_start_epoch=2",
           "train.ema_decay=0.9", "train.checkpoint_every_steps=5")


def _latest_state(workdir):
  checkpoints = Checkpoints(str(pathlib.Path(workdir) / "checkpoints"))
  step = checkpoints.latest_step()
  config = ml_collections.ConfigDict(json.loads(checkpoints.meta(step)["config"]))
  state, _ = checkpoints.restore(step, train._Run(config, str(workdir)).state,
                                 config.to_json(sort_keys=True))
  checkpoints.close()
  return jax.device_get(state)


def test_mart_with_awp_and_a_weight_average_trains_and_resumes_exactly(tmp_path):
  reference, workdir = tmp_path / "uninterrupted", tmp_path / "killed"
  _launch(reference, METHODS)
  _kill_after_step_5(workdir, METHODS)
  latest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert latest < STEPS_PER_EPOCH and not (workdir / "record.json").exists()
  assert f"from step {latest}" in _launch(workdir, METHODS).stdout
  expected, got = _record(reference), _record(workdir)
  assert {k: got[k] for k in EVAL_KEYS} == {k: expected[k] for k in EVAL_KEYS}
  assert got["method"] == "mart" and got["evaluated_weights"] == "ema"
  assert got["natural_accuracy"] > 0.25
  state, expected_state = _latest_state(workdir), _latest_state(reference)
  chex.assert_trees_all_equal(state.params, expected_state.params)
  chex.assert_trees_all_equal(state.ema_params, expected_state.ema_params)
  # The evaluated (and restored) weights are the average, not the last iterate.
  chex.assert_trees_all_equal(_params(workdir), state.ema_params)
  assert not any(np.allclose(raw, average) for raw, average in
                 zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params)))


@pytest.mark.parametrize("method,beta,gamma", [("trades", 6.0, 5e-3), ("pgd_at", 1.0, 1e-2)])
def test_awp_trains_on_top_of_trades_and_pgd_at(method, beta, gamma, tmp_path):
  config = smoke.get_config()  # TRADES-AWP and AT-AWP (Madry's λ = 1), AWP from epoch 1.
  config.train.method, config.train.beta = method, beta
  config.train.awp_gamma, config.train.awp_start_epoch = gamma, 1
  record = train.train_and_evaluate(config, str(tmp_path))
  assert record["method"] == method and record["evaluated_weights"] == "raw"
  assert record["config"]["train"]["awp_gamma"] == gamma
  assert record["natural_accuracy"] > 0.25  # Two epochs learn something on digits.


def _baseline_config():
  config = smoke.get_config()
  config.train.checkpoint_every_steps = 5
  config.war.rule, config.war.reference_ratio = "adaptive", 0.05
  return config


def _copy_without_record(baseline_dir, destination):
  shutil.copytree(baseline_dir, destination)
  (destination / "record.json").unlink()
  return destination


def test_a_corrupt_checkpoint_stops_with_a_clear_error_and_nothing_is_lost(baseline, tmp_path):
  workdir = _copy_without_record(baseline[0], tmp_path / "corrupt")
  latest = max(p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  for path in (latest / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(b"\0" * 16)
  before = sorted(str(p) for p in workdir.rglob("*"))
  with pytest.raises(CheckpointError, match="nothing was deleted"):
    train.train_and_evaluate(_baseline_config(), str(workdir))
  assert sorted(str(p) for p in workdir.rglob("*")) == before


def test_a_checkpoint_of_another_configuration_is_refused(baseline, tmp_path):
  config = _baseline_config()
  config.train.lr = 0.2
  with pytest.raises(CheckpointError, match="finished run with a different configuration"):
    train.train_and_evaluate(config, str(baseline[0]))
  workdir = _copy_without_record(baseline[0], tmp_path / "other")
  with pytest.raises(CheckpointError, match=r"config.train.lr: checkpoint 0.05, now 0.2"):
    train.train_and_evaluate(config, str(workdir))


def test_a_missing_data_set_names_the_prepare_command(tmp_path):
  config = smoke.get_config()
  config.data.name = "cifar10"
  config.data.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="python -m launch.prepare_data cifar10"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("key,value,message", [
    ("model.width", 0, "config.model.width = 0 is not allowed: it must be an integer >= 1"),
    ("attack.eps", -0.1, "config.attack.eps = -0.1 is not allowed: it must be >= 0"),
    ("train.schedule", "step", "use one of ('multistep', 'halving', 'cosine', 'constant')"),
    ("train.batch_size", 60, "it must be divisible by the 8 devices"),
    ("model.depth", 12, "a WideResNet depth is 6n + 4"),
    ("train.method", "awp", "use one of ('standard', 'pgd_at', 'trades', 'mart')"),
    ("train.ema_decay", 1.0, "config.train.ema_decay = 1.0 is not allowed: it must lie in [0, 1)"),
    ("train.awp_gamma", -0.01, "config.train.awp_gamma = -0.01 is not allowed: it must be >= 0"),
    ("train.awp_start_epoch", 0, "it must be an integer >= 1"),
    ("war.rule", "adaptive", "needs reference_ratio > 0"),
])
def test_invalid_values_fail_at_start_up(key, value, message):
  config = smoke.get_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    config_lib.validate(config, device_count=jax.device_count())


def test_unknown_keys_are_named():
  config = smoke.get_config()
  config.train.betaa = 9
  with pytest.raises(config_lib.ConfigError, match="config.train.betaa is not a known "
                     "configuration key; did you mean config.train.beta"):
    config_lib.validate(config)
  result = subprocess.run(_command("/tmp/unused", ("train.betaa=9",)), cwd=REPO, env=_env(1),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and "betaa" in result.stderr


@pytest.mark.parametrize("method", cifar10_methods.METHODS)
def test_the_method_configs_are_valid(method):
  config_lib.validate(cifar10_methods.get_config(f"method={method}"))


def test_config_file_arguments_are_parsed_and_checked():
  assert smoke.get_config("width=3,epochs=1").model.width == 3
  with pytest.raises(config_lib.ConfigError, match="is not one of"):
    smoke.get_config("depth=3")
