"""launch.evaluate on a one-epoch smoke run and on PyTorch checkpoints: the RobustBench-style
record and its numbers."""
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import smoke
from launch import evaluate
from robustwidth import data, evaluation, experiment, metrics, models, train
from robustwidth.checkpoint import Checkpoints
from tests import helpers


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("evaluate_run")
  config = smoke.get_config("epochs=1")
  config.eval.every_epochs = 1
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.mark.filterwarnings("ignore:100.0% of the correctly classified")  # zero weights: no gradient
def test_autoattack_at_the_end_of_a_run_attacks_the_weights_it_evaluated():
  # With a weight average the evaluated weights are the average: here all zero, a constant
  # classifier (every logit 0, argmax class 0), which no attack moves.
  config = smoke.get_config()
  config.model.family, config.model.depth, config.train.ema_decay = "mlp", 1, 0.9
  config.eval.autoattack_examples = 80
  spec = experiment.spec_from_info(config)
  _, params, model_state = models.split(experiment.create_model(config, (8, 8, 1), 10))
  state = experiment.train_state(config, spec, params, model_state)
  state = state.replace(ema_params=jax.tree.map(np.zeros_like, state.params))
  test = data.load("digits", "test")
  result = evaluation.autoattack(experiment.abstract_model(config, spec)[0], state, test, config,
                                 jax.random.key(0))
  share_of_class_0 = float(np.mean(test.labels[:80] == 0))
  assert share_of_class_0 > 0
  assert result["autoattack_natural_accuracy"] == share_of_class_0
  assert result["autoattack_accuracy"] == share_of_class_0


def test_record_has_the_robustbench_fields(run_dir):
  record = evaluate.evaluate(str(run_dir), evaluations=["pgd-2", "cw-2"], n_examples=24,
                             batch_size=32)
  for key in ("model", "width", "depth", "params", "dataset", "norm", "eps", "clean_acc",
              "autoattack_acc", "per_attack_acc", "perturbation_stability", "seed", "versions"):
    assert key in record, key
  assert record["model"] == "WideResNet-10-1" and record["n_examples"] == 24
  assert record["eps"] == 0.1 and record["norm"] == "linf" and record["autoattack_acc"] is None
  pgd, cw = record["evaluations"]["pgd-2"], record["evaluations"]["cw-2"]
  assert record["worst_case_acc"] <= min(pgd["robust_acc"], cw["robust_acc"])
  assert max(pgd["robust_acc"], cw["robust_acc"]) <= record["clean_acc"]
  assert pgd["settings"]["pgd-2"]["num_steps"] == 2 and pgd["max_perturbation"] <= 0.1 + 1e-6
  json.dumps(record, default=float)


def test_bad_example_counts_are_refused(run_dir):
  with pytest.raises(ValueError, match="n_examples"):
    evaluate.evaluate(str(run_dir), evaluations=["pgd-2"], n_examples=10_000)


def test_paths_are_checked_before_any_attack_runs(run_dir, tmp_path):
  # A missing --output directory lost a whole evaluation at the end; a mistyped --workdir
  # created <typo>/checkpoints.
  evaluate.check_paths(str(tmp_path / "evaluation.json"), workdir=str(run_dir))
  with pytest.raises(FileNotFoundError, match="--output .*missing/evaluation.json: the "
                     "directory .*missing does not exist"):
    evaluate.check_paths(str(tmp_path / "missing" / "evaluation.json"), workdir=str(run_dir))
  with pytest.raises(PermissionError, match="cannot be written"):
    evaluate.check_paths(str(tmp_path), workdir=str(run_dir))
  with pytest.raises(FileNotFoundError, match="--workdir .*typo is not a directory"):
    evaluate.check_paths(str(tmp_path / "evaluation.json"), workdir=str(tmp_path / "typo"))
  with pytest.raises(FileNotFoundError, match="no run directory"):
    evaluation.restore_model(str(tmp_path / "typo"))
  assert not (tmp_path / "typo").exists()


def test_a_run_is_restored_for_evaluation_without_its_training_data_or_reference_run(
    tmp_path, monkeypatch):
  # Restoring loaded both splits (and any extra data) and read the adaptive rule's r0 from the
  # reference run's record, which had to still exist.
  helpers.write_fashion_idx(tmp_path, counts=(64, 16))
  config = smoke.get_config("epochs=1")
  config.data.name, config.data.data_dir = "fashion_mnist", str(tmp_path)
  config.model.family, config.model.depth, config.model.base_channels = "mlp", 1, 4
  config.train.batch_size, config.train.attack_steps = 32, 1
  config.eval.batch_size, config.eval.num_steps = 16, 1
  train.train_and_evaluate(config, str(tmp_path / "reference"))
  config.model.width, config.war.rule = 2, "adaptive"
  config.war.reference_run = str(tmp_path / "reference")
  record = train.train_and_evaluate(config, str(tmp_path / "wide"))
  assert record["beta_rule"].startswith("adaptive")
  shutil.rmtree(tmp_path / "reference")
  for name in os.listdir(tmp_path):
    if name.startswith("train-"):
      os.remove(tmp_path / name)
  loaded = []
  load = data.load
  monkeypatch.setattr(data, "load", lambda name, split, **kw: (
      loaded.append(split), load(name, split, **kw))[1])
  evaluation.restore_model(str(tmp_path / "wide"))
  assert loaded == []
  # The restored weights are the ones the trainer evaluated: same clean accuracy on the same
  # 16 test points.
  result = evaluate.evaluate(str(tmp_path / "wide"), evaluations=["pgd-1"], batch_size=16)
  assert loaded == ["test"] and result["n_examples"] == 16
  assert result["clean_acc"] == round(100 * record["natural_accuracy"], 2)


def test_a_checkpoint_written_before_run_specs_is_restored_from_the_published_shapes(
    run_dir, tmp_path):
  _, state, _ = evaluation.restore_train_state(str(run_dir))
  written = Checkpoints(str(run_dir / "checkpoints"))
  step = written.best_step()
  meta = written.meta(step)
  written.close()
  del meta["spec"]
  older = Checkpoints(str(tmp_path / "checkpoints"))
  older.save(step, state, meta, meta["eval"])
  older.close()
  chex.assert_trees_all_equal(jax.device_get(evaluation.restore_model(str(tmp_path))[1]),
                              jax.device_get(evaluation.restore_model(str(run_dir))[1]))


torch = pytest.importorskip("torch")


def _tiny_checkpoint(tmp_path, arch, in_channels=1):
  """A random PyTorch model of `arch` (on 8×8 grey digits unless told; BatchNorm statistics
  away from their defaults, `helpers.randomized`), saved as RobustBench saves its files
  ({"state_dict": ...}); returns (path, model)."""
  from robustwidth import interop
  torch.manual_seed(0)
  sizes = dict(depth=10, width=1, base_channels=2) if arch == "wide_resnet" else dict(
      base_channels=2)
  net = helpers.randomized(interop.torch_model(arch, 10, in_channels=in_channels, **sizes))
  path = str(tmp_path / f"{arch}.pt")
  torch.save({"state_dict": net.state_dict()}, path)
  return path, net


@pytest.mark.parametrize("arch", ["wide_resnet", "preact_resnet18", "resnet18"])
def test_torch_checkpoint_record(tmp_path, arch):
  path, _ = _tiny_checkpoint(tmp_path, arch)
  mean, std = ([0.5], [0.25]) if arch == "wide_resnet" else (None, None)
  record = evaluate.evaluate_torch_checkpoint(path, arch=arch, dataset="digits",
                                              evaluations=["pgd-2", "cw-2"], n_examples=12,
                                              batch_size=16, mean=mean, std=std)
  assert record["model"] == {"wide_resnet": "WideResNet-10-1", "preact_resnet18":
                             "PreActResNet-18", "resnet18": "ResNet-18"}[arch]
  assert record["eps"] == pytest.approx(8 / 255) and record["norm"] == "linf"
  assert record["n_examples"] == 12 and record["dataset"] == "digits"
  assert record["input_normalization"] == (None if mean is None else dict(mean=mean, std=std))
  for name in ("pgd-2", "cw-2"):
    result = record["evaluations"][name]
    counts = result["counts"]
    # The stability decomposition: the cells partition the examples, and robust accuracy
    # is P(correct ∧ stable) + P(wrong ∧ x̂ predicted y).
    assert sum(counts[c] for c in metrics.CELLS) == counts["count"] == 12
    assert result["robust_acc"] == pytest.approx(
        100 * (counts["correct_stable"] + counts["wrong_adv_correct"]) / 12, abs=0.01)
    assert result["robust_acc"] <= record["clean_acc"]
    assert result["max_perturbation"] <= 8 / 255 + 1e-6
  assert record["worst_case_acc"] <= min(r["robust_acc"] for r in record["evaluations"].values())
  json.dumps(record, default=float)


def test_torch_checkpoint_from_the_command_line(tmp_path):
  path, _ = _tiny_checkpoint(tmp_path, "wide_resnet")
  output = tmp_path / "record.json"
  result = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", "--torch_checkpoint", path,
       "--arch", "wide_resnet", "--dataset", "digits", "--attacks", "pgd-2",
       "--input_mean", "0.5", "--input_std", "0.25", "--n_examples", "8", "--batch_size", "8",
       "--output", str(output)],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(output.read_text())
  assert record["family"] == "wide_resnet" and record["n_examples"] == 8
  assert record["input_normalization"] == dict(mean=[0.5], std=[0.25])
  assert "WideResNet-10-1 on digits" in result.stdout


@helpers.needs_tensorflow
def test_torch_checkpoint_on_cifar10_files_prepared_as_users_prepare_them(tmp_path):
  # A CIFAR-10 archive in the official binary format, prepared by launch.prepare_data.
  data_dir, written = helpers.prepare_cifar("cifar10", tmp_path)
  path, net = _tiny_checkpoint(tmp_path, "preact_resnet18", in_channels=3)
  record = evaluate.evaluate_torch_checkpoint(path, arch="preact_resnet18", dataset="cifar10",
                                              data_dir=data_dir, evaluations=["pgd-2"],
                                              batch_size=8)
  images, labels = written["test"]
  with torch.no_grad():  # PyTorch's own predictions on the archive's images, NCHW in [0, 1]
    logits = net(torch.from_numpy(images.transpose(0, 3, 1, 2) / 255.0).float())
  assert record["dataset"] == "cifar10" and record["n_examples"] == len(labels) == 7
  assert record["clean_acc"] == pytest.approx(
      100 * np.mean(logits.argmax(1).numpy() == labels), abs=0.01)
  counts = record["evaluations"]["pgd-2"]["counts"]
  assert sum(counts[c] for c in metrics.CELLS) == counts["count"] == 7
