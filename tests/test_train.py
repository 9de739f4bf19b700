"""train_and_evaluate end to end: the launcher, reuse, exact resume after SIGKILL, 1 vs 8
devices, two processes through jax.distributed, and the errors users meet."""
import json
import os
import pathlib
import re
import shlex
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

from configs import (authors, cifar10_methods, fashion_width_study, ntk_width, smoke, trades,
                     width_study)
from launch import cli
from robustwidth import config as config_lib
from robustwidth import evaluation, experiment, train
from robustwidth.checkpoint import CheckpointError
from tests import helpers

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
  return jax.device_get(evaluation.restore_model(str(workdir), which="latest")[1])


# Record fields that measure time, which no two runs share.
TIMES = ("train_time_s", "wall_time_s", "compile_time_s", "images_per_s")
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


def _metrics_lines(workdir) -> list[dict]:
  return [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]


def _kill_after_checkpoint(workdir, overrides, step):
  """Starts a run (checkpointing every 5 steps) and SIGKILLs it once step `step` is saved,
  while it goes on training."""
  process = subprocess.Popen(_command(workdir, overrides), cwd=REPO, env=_env(2),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint = workdir / "checkpoints" / str(step)
  deadline = time.time() + 300
  while not checkpoint.exists():
    assert process.poll() is None and time.time() < deadline, "run ended before the kill"
    time.sleep(0.01)
  time.sleep(0.2)
  os.kill(process.pid, signal.SIGKILL)
  process.wait()


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(baseline, tmp_path):
  # Killed in the last epoch just after a mid-epoch checkpoint (step 30, the 8th of the second
  # and last epoch): everything the run records equals the uninterrupted run's (times aside),
  # the last epoch's train means (the record's train_lipschitz_probe, which covered only the
  # steps after resuming) and every line of metrics.jsonl included: none replayed, none lost.
  reference, _ = baseline
  workdir = tmp_path / "killed"
  _kill_after_checkpoint(workdir, TRADES, 30)
  latest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert latest % STEPS_PER_EPOCH and not (workdir / "record.json").exists()
  resumed = _launch(workdir)
  assert f"Resuming {workdir} from step {latest}" in resumed.stdout
  expected, got = _record(reference), _record(workdir)
  assert set(got) == set(expected)
  assert {k: v for k, v in got.items() if k not in TIMES} == {
      k: v for k, v in expected.items() if k not in TIMES}
  assert _metrics_lines(workdir) == _metrics_lines(reference)
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


@pytest.mark.parametrize("mode,arguments", [
    ("local", ["2"]), ("host", ["10.0.0.1:1234", "2", "0"]), ("slurm", []),
    ("tpu", ["my-tpu", "us-central2-b"])])
def test_multihost_passes_every_argument_through_unsplit_and_unexpanded(mode, arguments,
                                                                         tmp_path):
  # The tpu mode's remote command left the workdir and flags unquoted: a space split the
  # workdir and `$(...)` ran on the hosts.
  marker = tmp_path / "ran"
  workdir = f"{tmp_path}/my runs/$(touch {marker})"
  flag = f"--config.data.extra_path={tmp_path}/it's here"
  result = subprocess.run(["bash", "launch/multihost.sh", mode, *arguments, "configs/smoke.py",
                           workdir, flag], cwd=REPO, env={**os.environ, "DRY_RUN": "1"},
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  commands = [shlex.split(line) for line in result.stdout.splitlines()]
  assert len(commands) == (2 if mode == "local" else 1)
  for command in commands:
    if mode == "tpu":
      remote = command[command.index("--command") + 1]
      assert remote.startswith("cd ~/robustwidth && ")
      command = shlex.split(remote.removeprefix("cd ~/robustwidth && "))
    main = command[command.index("launch.main") + 1:]
    assert main[:4] == ["--config", "configs/smoke.py", "--workdir", workdir]
    assert main[-1] == flag and "--distributed" in main
  assert not marker.exists()


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
  return jax.device_get(evaluation.restore_train_state(str(workdir), "latest")[1])


def test_mart_with_awp_and_a_weight_average_trains_and_resumes_exactly(tmp_path):
  reference, workdir = tmp_path / "uninterrupted", tmp_path / "killed"
  _launch(reference, METHODS)
  _kill_after_checkpoint(workdir, METHODS, 5)
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
  with pytest.raises(CheckpointError, match="Move that step's directory out of the checkpoints "
                     "directory and run again: the run resumes exactly from the checkpoint "
                     "before it .* nothing was deleted"):
    train.train_and_evaluate(_baseline_config(), str(workdir))
  assert sorted(str(p) for p in workdir.rglob("*")) == before


def test_a_damaged_record_is_named_with_what_to_do(baseline, tmp_path):
  workdir = tmp_path / "damaged"
  shutil.copytree(baseline[0], workdir)
  (workdir / "record.json").write_text('{"width": 1, "conf')
  with pytest.raises(CheckpointError, match="record.json is damaged .* Move it aside and run "
                     "again: the run's final checkpoint writes it anew without training"):
    train.train_and_evaluate(_baseline_config(), str(workdir))


def test_a_checkpoint_of_another_configuration_is_refused(baseline, tmp_path):
  config = _baseline_config()
  config.train.lr = 0.2
  with pytest.raises(CheckpointError, match=r"finished run with a different configuration "
                     r"\(config.train.lr: record 0.05, now 0.2\)"):
    train.train_and_evaluate(config, str(baseline[0]))
  workdir = _copy_without_record(baseline[0], tmp_path / "other")
  with pytest.raises(CheckpointError, match=r"config.train.lr: checkpoint 0.05, now 0.2"):
    train.train_and_evaluate(config, str(workdir))


def test_a_run_finished_before_a_setting_existed_is_reused_at_that_settings_default(
    baseline, tmp_path):
  """A record written before `model.cnn_head` was added to the schema: the default (the old
  behaviour) matches it, a non-default value does not."""
  workdir = tmp_path / "older"
  shutil.copytree(baseline[0], workdir)
  record = json.loads((workdir / "record.json").read_text())
  del record["config"]["model"]["cnn_head"]
  (workdir / "record.json").write_text(json.dumps(record))
  reused = train.train_and_evaluate(_baseline_config(), str(workdir))
  assert reused["natural_accuracy"] == record["natural_accuracy"]
  config = _baseline_config()
  config.model.cnn_head = "flatten"
  with pytest.raises(CheckpointError, match=r"config.model.cnn_head: record 'pool', now "
                     r"'flatten'"):
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
    ("train.batch_size", 60, "the global batch is split evenly over the 8 devices, so it must "
     "be a multiple of 8"),
    ("model.depth", 12, "a WideResNet depth is 6n + 4"),
    ("attack.norm", "l0", "use one of ('linf', 'l2', 'l1')"),
    ("train.method", "awp", "use one of ('standard', 'pgd_at', 'trades', 'mart')"),
    ("train.ema_decay", 1.0, "config.train.ema_decay = 1.0 is not allowed: it must lie in [0, 1)"),
    ("train.awp_gamma", -0.01, "config.train.awp_gamma = -0.01 is not allowed: it must be >= 0"),
    ("train.awp_start_epoch", 0, "it must be an integer >= 1"),
    ("war.rule", "adaptive", "needs reference_ratio > 0"),
    ("train.lr", float("inf"), "config.train.lr = inf is not allowed: it must be finite"),
    ("train.beta", float("inf"), "config.train.beta = inf is not allowed: it must be finite"),
    ("war.beta_max", float("nan"), "config.war.beta_max = nan is not allowed: it must be finite"),
    ("seed", -1, "config.seed = -1 is not allowed: it must be an integer >= 0"),
    ("train.batch_norm_updates", ("clean", "adv"), "name batches from ('clean', 'adversarial')"),
    ("train.decay_epochs", (0, 90), "epochs are counted from 1"),
    ("train.decay_epochs", (90, 75), "list each epoch once, increasing"),
    ("train.pgd_at_form", "max", "use one of ('difference', 'clamped')"),
    ("train.beta", -1.0, "it must be >= 0 (or unset: the method's reference)"),
])
def test_invalid_values_fail_at_start_up(key, value, message):
  config = smoke.get_config()
  *section, name = key.split(".")
  (config[section[0]] if section else config)[name] = value
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    config_lib.validate(config, device_count=jax.device_count())


def test_resnet_families_and_the_l1_norm_are_valid():
  config = smoke.get_config()
  config.attack.norm = "l1"
  config.model.family, config.model.depth = "preact_resnet", 18
  config_lib.validate(config, device_count=jax.device_count())
  config.model.depth = 20
  with pytest.raises(config_lib.ConfigError, match="a ResNet depth is 18 or 34"):
    config_lib.validate(config, device_count=jax.device_count())


SPEC = experiment.RunSpec(image_shape=(8, 8, 1), num_classes=10, steps_per_epoch=1)


def test_pgd_at_means_madry_unless_told_otherwise():
  # Unset λ and start resolve per method: a pgd_at run never inherits TRADES' β = 6 and start.
  config = smoke.get_config()
  config.train.method = "pgd_at"
  config_lib.validate(config)
  settings = experiment.train_settings(config, SPEC)
  assert (settings.rule.beta0, settings.attack.init, settings.attack.loss,
          settings.batch_norm_updates) == (1.0, "uniform", "ce", ("adversarial",))
  config.train.pgd_at_form = "clamped"
  assert experiment.train_settings(config, SPEC).batch_norm_updates == (
      "adversarial", "clean")
  settings = experiment.train_settings(smoke.get_config(), SPEC)
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
  settings = experiment.train_settings(config, SPEC)
  assert (config.data.name, config.model.width, config.train.method, settings.rule.beta0,
          config.train.batch_size, config.train.schedule, settings.batch_norm_updates,
          config.eval.step_size) == expected
  assert settings.attack.init == "normal" and config.train.decay_epochs == (75, 90, 100)
  with pytest.raises(config_lib.ConfigError, match="dataset='svhn' is not one of"):
    get_config("dataset=svhn")


def test_width_study_preset_takes_the_dataset():
  assert width_study.get_config("dataset=cifar100").data.name == "cifar100"
  config_lib.validate(width_study.get_config())


def test_unknown_keys_are_named(tmp_path):
  suggestion = "'betaa' is not a configuration key. Did you mean \"beta\" instead of \"betaa\"?"
  with pytest.raises(AttributeError, match="betaa"):  # base() is locked: no key can be added.
    smoke.get_config().train.betaa = 9
  unlocked = ml_collections.ConfigDict(smoke.get_config().to_dict())  # e.g. read from JSON
  unlocked.train.betaa = 9
  with pytest.raises(config_lib.ConfigError, match=re.escape(suggestion)):
    config_lib.validate(unlocked)
  config_file = tmp_path / "typo.py"
  config_file.write_text("from configs import smoke\n\ndef get_config():\n"
                         "  c = smoke.get_config()\n  c.train.betaa = 9\n  return c\n")
  for command in (_command(tmp_path / "run", ("train.betaa=9",)),
                  [sys.executable, "-m", "launch.main", f"--config={config_file}",
                   f"--workdir={tmp_path / 'run'}"]):
    result = subprocess.run(command, cwd=REPO, env={**_env(1), "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"ConfigError: {suggestion} (Every key and its default: robustwidth/config.py "
        "base().) (set ROBUSTWIDTH_DEBUG=1 for the traceback)")


@pytest.mark.parametrize("method", cifar10_methods.METHODS)
def test_the_method_configs_are_valid(method):
  config_lib.validate(cifar10_methods.get_config(f"method={method}"))


def test_config_file_arguments_are_parsed_and_checked():
  assert smoke.get_config("width=3,epochs=1").model.width == 3
  with pytest.raises(config_lib.ConfigError, match="is not one of"):
    smoke.get_config("depth=3")


def test_config_file_arguments_are_parsed_by_type():
  # bool("false") is True: quick=false turned quick mode on; int(1.5) gave width 1.
  full_study = ("mlp", "cnn", "wide_resnet")
  for text in ("false", "False", "FALSE"):
    assert ntk_width.get_config(f"quick={text}").ntk_width.families == full_study
  assert ntk_width.get_config("quick=true").ntk_width.families == ("mlp",)
  assert ntk_width.get_config("seeds=3").ntk_width.init_seeds == 3
  for bad, kind in (("width=1.5", "int"), ("epochs=2.9", "int"), ("width=wide", "int"),
                    ("width=True", "int")):
    with pytest.raises(config_lib.ConfigError, match=f"{bad.replace('=', '=.')}. is not a "
                       f"{kind} like its default"):
      smoke.get_config(bad)
  with pytest.raises(config_lib.ConfigError, match="is not a bool"):
    ntk_width.get_config("quick=yes")
  assert config_lib.parse_arg("beta=9", beta=6.0).beta == 9.0  # An int where a float goes.


def _digits_run(**changes):
  """One epoch of standard training of the smoke WRN: a few seconds."""
  config = smoke.get_config("epochs=1")
  config.train.method = "standard"
  for key, value in changes.items():
    section, name = key.split("__")
    config[section][name] = value
  return config


def test_a_diverged_run_stops_at_the_step_it_diverged_and_writes_no_record(tmp_path):
  # lr = 1e4 trained to NaN and recorded natural 10% / robust 10% / stability 100%.
  workdir = tmp_path / "diverged"
  with pytest.raises(train.NonFiniteError) as error:
    train.train_and_evaluate(_digits_run(train__lr=1e4), str(workdir))
  message = str(error.value)
  step = int(re.match(r"Training step (\d+) produced NaN or infinite ", message).group(1))
  assert "Try a lower config.train.lr" in message
  assert not (workdir / "record.json").exists()
  logged = [e for e in _metrics_lines(workdir) if e["kind"] == "step"]
  # Every step before it was logged, and finite; the diverged one never is.
  assert [e["step"] for e in logged] == list(range(1, step))
  assert all(np.isfinite(e["loss"]) for e in logged)


def test_a_second_writer_of_a_workdir_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
  workdir = tmp_path / "busy"
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom robustwidth import train\n"
       f"with train._exclusive({str(workdir)!r}):\n  print('locked', flush=True)\n"
       "  time.sleep(600)"], cwd=REPO, env=_env(1), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(train.WorkdirBusyError, match="being written by another run .* use "
                       "another --workdir"):
      train.train_and_evaluate(_digits_run(), str(workdir))
    assert os.listdir(workdir) == ["lock"]  # Refused before it wrote anything.
  finally:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
  with train._exclusive(str(workdir)):  # The OS released the killed holder's lock.
    pass


def test_eval_batches_are_padded_for_8_and_16_devices(tmp_path):
  # eval.batch_size 100 on 8 and 16 devices (padded to 104 and 112; it had to divide the
  # device count): every test example is counted once, and 16 devices train what 8 train.
  # A one-layer MLP and one PGD step keep both runs to seconds.
  changes = {"train__method": "standard", "train__batch_size": 256, "model__family": "mlp",
             "model__depth": 1, "model__base_channels": 4, "eval__num_steps": 1,
             "eval__batch_size": 100}
  eight = train.train_and_evaluate(_digits_run(**changes), str(tmp_path / "eight"))
  command = _command(tmp_path / "sixteen", [f"{k.replace('__', '.')}={v}"
                                            for k, v in changes.items()])
  command[command.index("configs/smoke.py")] = "configs/smoke.py:epochs=1"
  result = subprocess.run(command, cwd=REPO, env=_env(16), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  sixteen = _record(tmp_path / "sixteen")
  assert eight["count"] == sixteen["count"] == 360
  assert sixteen["natural_accuracy"] == pytest.approx(eight["natural_accuracy"], abs=1 / 360)


@pytest.mark.parametrize("key,value,message", [
    ("seed", -1, "config.seed = -1 is not allowed: it must be an integer >= 0"),
    ("train.batch_size", 0, "config.train.batch_size = 0 is not allowed"),
])
def test_user_errors_are_one_line_and_the_traceback_is_behind_a_variable(key, value, message,
                                                                          monkeypatch):
  def main(argv):
    config = smoke.get_config()
    *section, name = key.split(".")
    (config[section[0]] if section else config)[name] = value
    config_lib.validate(config)

  with pytest.raises(SystemExit) as stopped:
    cli._one_line_errors(main, ["launch.main"])
  line = str(stopped.value)
  assert line.startswith(f"ConfigError: {message}") and "\n" not in line
  assert line.endswith("(set ROBUSTWIDTH_DEBUG=1 for the traceback)")
  monkeypatch.setenv("ROBUSTWIDTH_DEBUG", "1")
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    cli._one_line_errors(main, ["launch.main"])


def test_the_launcher_prints_a_user_error_as_one_line(tmp_path):
  result = subprocess.run(_command(tmp_path / "run", ("seed=-1",)), cwd=REPO, env=_env(1),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "ConfigError: config.seed = -1 is not allowed: it must be an integer >= 0. "
      "(set ROBUSTWIDTH_DEBUG=1 for the traceback)")


def _fashion_config(data_dir, method, awp_gamma, ema_decay):
  """The Fashion-MNIST study's CNN, shrunk to seconds: 8 epochs of 8 steps, 2 attack steps.

  Its CNN, not its MLP: on the MLP at ε = 0.1, the objectives with no clean term (MART, Madry's
  PGD-AT) collapse to a constant predictor, as the reference does (docs/reference_check.md)."""
  config = fashion_width_study.get_config("family=cnn")
  config.job, config.data.data_dir, config.data.train_examples = "train", str(data_dir), 0
  config.train.method, config.train.beta = method, None
  config.train.awp_gamma, config.train.awp_start_epoch = awp_gamma, 1
  config.train.ema_decay, config.train.checkpoint_every_steps = ema_decay, 20
  config.train.epochs, config.train.batch_size, config.train.attack_steps = 8, 32, 2
  config.eval.every_epochs, config.eval.num_steps, config.eval.batch_size = 8, 2, 64
  config.eval.autoattack_examples = 0
  return config


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
  """Generated Fashion-MNIST IDX files whose images are learnable (chance is 0.1)."""
  directory = tmp_path_factory.mktemp("fashion")
  helpers.write_fashion_idx(directory, counts=(256, 64), learnable=True)
  return directory


FASHION_METHODS = {"trades": (5e-3, 0.5), "pgd_at": (1e-2, 0.0), "mart": (0.0, 0.0)}


def _fashion_run(fashion_dir, method) -> dict:
  """The method's uninterrupted run in fashion_dir/method (trained once, then reused)."""
  config = _fashion_config(fashion_dir, method, *FASHION_METHODS[method])
  return train.train_and_evaluate(config, str(fashion_dir / method))


@pytest.mark.parametrize("method", FASHION_METHODS)
def test_the_new_methods_train_on_fashion_mnist_files(method, fashion_dir):
  # TRADES-AWP with a weight average, AT-AWP and MART each learn the patches, read through the
  # real loader.
  record = _fashion_run(fashion_dir, method)
  assert record["dataset"] == "fashion_mnist" and record["method"] == method
  assert record["evaluated_weights"] == ("ema" if FASHION_METHODS[method][1] else "raw")
  assert record["natural_accuracy"] > 0.5  # five times chance after 64 steps


class _Crash(Exception):
  pass


def test_mart_on_fashion_mnist_files_resumes_exactly(fashion_dir, tmp_path, monkeypatch, capsys):
  # A run that stops after its mid-epoch checkpoint at step 20 ends where the uninterrupted
  # one does.
  record = _fashion_run(fashion_dir, "mart")
  save = train._save

  def save_then_crash(run, checkpoints, state, meta, eval_metrics=None):
    save(run, checkpoints, state, meta, eval_metrics)
    if int(jax.device_get(state.step)) == 20:
      raise _Crash

  config = _fashion_config(fashion_dir, "mart", *FASHION_METHODS["mart"])
  monkeypatch.setattr(train, "_save", save_then_crash)
  with pytest.raises(_Crash):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, str(tmp_path))
  assert f"Resuming {tmp_path} from step 20." in capsys.readouterr().out
  assert {k: resumed[k] for k in EVAL_KEYS} == {k: record[k] for k in EVAL_KEYS}
  chex.assert_trees_all_equal(_params(tmp_path), _params(fashion_dir / "mart"))
