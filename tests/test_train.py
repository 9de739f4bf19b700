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
import numpy as np
import pytest

from configs import authors, smoke, trades, width_study
from robustwidth import config as config_lib
from robustwidth import train
from robustwidth.checkpoint import CheckpointError

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 1437 // 64  # digits train split, smoke batch size
# Mid-epoch checkpoints for the SIGKILL test, and the adaptive WAR rule (its λ moves every
# step, from 6 up toward its bound beta_max = 100 here), so that resuming must restore the
# rule's running state too.
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
  assert 7 < record["beta"] <= 100  # The adaptive rule enlarged λ, within beta_max.
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


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(baseline, tmp_path):
  reference, _ = baseline
  workdir = tmp_path / "killed"
  process = subprocess.Popen(_command(workdir, TRADES), cwd=REPO, env=_env(2),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first_checkpoint = workdir / "checkpoints" / "5"
  deadline = time.time() + 300
  while not first_checkpoint.exists():
    assert process.poll() is None and time.time() < deadline, "run ended before step 5"
    time.sleep(0.01)
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
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
    ("train.method", "mart", "use one of ('standard', 'pgd_at', 'trades')"),
    ("war.rule", "adaptive", "needs reference_ratio > 0"),
    ("train.batch_norm_updates", ("clean", "adv"), "name batches from ('clean', 'adversarial')"),
    ("train.decay_epochs", (0, 90), "epochs are counted from 1"),
    ("train.decay_epochs", (90, 75), "list each epoch once, increasing"),
    ("train.pgd_at_form", "max", "use one of ('difference', 'clamped')"),
    ("train.beta", -1.0, "it must be >= 0 (or unset: the method's reference)"),
])
def test_invalid_values_fail_at_start_up(key, value, message):
  config = smoke.get_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    config_lib.validate(config, device_count=jax.device_count())


def test_pgd_at_means_madry_unless_told_otherwise():
  # Unset λ and start resolve per method: a pgd_at run never inherits TRADES' β = 6 and start.
  config = smoke.get_config()
  config.train.method = "pgd_at"
  config_lib.validate(config)
  settings = train.train_settings(config)
  assert (settings.rule.beta0, settings.attack.init, settings.attack.loss,
          settings.batch_norm_updates) == (1.0, "uniform", "ce", ("adversarial",))
  config.train.pgd_at_form = "clamped"
  assert train.train_settings(config).batch_norm_updates == ("adversarial", "clean")
  settings = train.train_settings(smoke.get_config())
  assert (settings.rule.beta0, settings.attack.init, settings.batch_norm_updates) == (
      6.0, "normal", ("clean", "adversarial", "clean"))


@pytest.mark.parametrize("get_config,arg,expected", [
    (trades.get_config, "dataset=cifar100,width=5",
     ("cifar100", 5, "trades", 6.0, 128, "multistep", ("clean", "adversarial", "clean"), 0.003)),
    (authors.get_config, None,
     ("cifar10", 10, "trades", 6.0, 64, "halving", ("clean", "adversarial"), 0.007)),
    (authors.get_config, "method=pgd_at,dataset=cifar100",
     ("cifar100", 10, "pgd_at", 2.0, 64, "halving", ("adversarial", "clean"), 0.007)),
])
def test_protocol_presets_validate_and_follow_their_code(get_config, arg, expected):
  config = get_config(arg)
  config_lib.validate(config)
  settings = train.train_settings(config)
  assert (config.data.name, config.model.width, config.train.method, settings.rule.beta0,
          config.train.batch_size, config.train.schedule, settings.batch_norm_updates,
          config.eval.step_size) == expected
  assert settings.attack.init == "normal" and config.train.decay_epochs == (75, 90, 100)
  with pytest.raises(config_lib.ConfigError, match="dataset='svhn' is not one of"):
    get_config("dataset=svhn")


def test_width_study_preset_takes_the_dataset():
  assert width_study.get_config("dataset=cifar100").data.name == "cifar100"
  config_lib.validate(width_study.get_config())


def test_unknown_keys_are_named():
  config = smoke.get_config()
  config.train.betaa = 9
  with pytest.raises(config_lib.ConfigError, match="config.train.betaa is not a known "
                     "configuration key; did you mean config.train.beta"):
    config_lib.validate(config)
  result = subprocess.run(_command("/tmp/unused", ("train.betaa=9",)), cwd=REPO, env=_env(1),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and "betaa" in result.stderr


def test_config_file_arguments_are_parsed_and_checked():
  assert smoke.get_config("width=3,epochs=1").model.width == 3
  with pytest.raises(config_lib.ConfigError, match="is not one of"):
    smoke.get_config("depth=3")
