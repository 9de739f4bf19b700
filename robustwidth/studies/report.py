"""The width study's report, from the records of its finished runs.

Writes `results.jsonl` (one record per run), `records/<run>.json` (RobustBench-style),
PNG plots against width (`plots`) and `report.md` (`render`): a plain verdict on the paper's
claim (at fixed β, does natural accuracy rise and stability fall with width, by more than
stability's spread over seeds? does WAR help the wide nets?), tables by width (mean ± standard
error over seeds), the best fixed β per width against each WAR rule's β, the paper's three
claims as tests (`judge`: a slope on log width and Welch t-tests over seeds, each with its
standard error, p-value and the effect it can detect), training accuracy at the end of training
and over its last quarter, and the tuning cost WAR saves. Runs are grouped by `aggregate`. In
the verdict a difference is called significant when it exceeds twice its standard error (over
seeds, and never below the binomial error of the test set).
"""
import glob
import json
import os

from robustwidth.studies import aggregate, plots, render


def load_records(workdir: str) -> list[dict]:
  records = []
  for path in sorted(glob.glob(os.path.join(workdir, "*", "record.json"))):
    with open(path) as f:
      record = json.load(f)
    record["run"] = os.path.basename(os.path.dirname(path))
    records.append(record)
  if not records:
    raise FileNotFoundError(f"No finished runs (*/record.json) under {workdir}: run the study "
                            "first (python -m launch.main --config ... --workdir ...).")
  return records


def train_curve(workdir: str, run: str) -> dict[int, float]:
  """epoch → mean training accuracy of that epoch, from the run's metrics.jsonl ({} without)."""
  path = os.path.join(workdir, run, "metrics.jsonl")
  curve = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        entry = json.loads(line)
        if entry["kind"] == "train":  # a resumed run's repeated epoch: the last one counts
          curve[entry["epoch"]] = entry["train_accuracy"]
  return curve


def robustbench_record(record: dict) -> dict:
  """A RobustBench-style entry for one run (accuracies in percent)."""
  evaluation = record["config"]["eval"]
  return {
      "model": (f"WRN-{record['depth']}-{record['width']}" if record["family"] == "wide_resnet"
                else f"{record['family']}-{record['depth']}-{record['width']}"),
      "width": record["width"],
      "depth": record["depth"], "base_channels": record["base_channels"],
      "params": record["params"], "dataset": record["dataset"],
      "threat_model": {"linf": "Linf", "l2": "L2", "l1": "L1"}[record["norm"]],
      "eps": record["eps"],
      "clean_acc": 100 * record["natural_accuracy"],
      "pgd_acc": 100 * record["robust_accuracy"],
      "pgd_settings": {"steps": evaluation["num_steps"], "step_size": evaluation["step_size"],
                       "restarts": evaluation["restarts"], "loss": "ce"},
      # Recorded with eval.autoattack_examples, or by `python -m launch.evaluate --workdir RUN`.
      "autoattack_acc": (100 * record["autoattack_accuracy"] if "autoattack_accuracy" in record
                         else None),
      "autoattack_examples": record.get("autoattack_examples"),
      "perturbation_stability": 100 * record["perturbation_stability"],
      "training": record["method"], "beta_rule": record["beta_rule"], "seed": record["seed"],
      "epochs": record["epochs"],
  }


def write(workdir: str) -> str:
  """Writes every output; returns the path of report.md."""
  records = load_records(workdir)
  with open(os.path.join(workdir, "results.jsonl"), "w") as f:
    for record in records:
      f.write(json.dumps({k: v for k, v in record.items() if k != "config"}) + "\n")
  os.makedirs(os.path.join(workdir, "records"), exist_ok=True)
  for record in records:
    with open(os.path.join(workdir, "records", f"{record['run']}.json"), "w") as f:
      json.dump(robustbench_record(record), f, indent=1)
  table = aggregate.aggregate(records)
  paths = plots.plot(table, workdir)
  curves = {record["run"]: train_curve(workdir, record["run"]) for record in records}
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write(render.document(records, table, curves, paths))
  return path
