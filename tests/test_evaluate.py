"""launch.evaluate on a one-epoch smoke run: the RobustBench-style record and its numbers."""
import json

import pytest

from configs import smoke
from launch import evaluate
from robustwidth import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("evaluate_run")
  config = smoke.get_config("epochs=1")
  config.eval.every_epochs = 1
  train.train_and_evaluate(config, str(workdir))
  return workdir


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
  evaluate.check_paths(str(run_dir), str(tmp_path / "evaluation.json"))
  with pytest.raises(FileNotFoundError, match="--output .*missing/evaluation.json: the "
                     "directory .*missing does not exist"):
    evaluate.check_paths(str(run_dir), str(tmp_path / "missing" / "evaluation.json"))
  with pytest.raises(PermissionError, match="cannot be written"):
    evaluate.check_paths(str(run_dir), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="--workdir .*typo is not a directory"):
    evaluate.check_paths(str(tmp_path / "typo"), str(tmp_path / "evaluation.json"))
  with pytest.raises(FileNotFoundError, match="no run directory"):
    train.restore_model(str(tmp_path / "typo"))
  assert not (tmp_path / "typo").exists()
