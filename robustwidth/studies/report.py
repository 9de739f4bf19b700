"""The width study's report: `results.jsonl` (one record per run), `report.md` (tables by
width, seeds aggregated as mean ± std) and PNG plots against width."""
import collections
import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLUMNS = (  # (record key, heading, format)
    ("natural_accuracy", "natural acc", "{:.2%}"),
    ("robust_accuracy", "robust acc", "{:.2%}"),
    ("perturbation_stability", "stability", "{:.2%}"),
    ("lipschitz_probe", "Lipschitz (test, CE)", "{:.3g}"),
    ("train_lipschitz_probe", "Lipschitz (train, KL)", "{:.3g}"),
    ("beta", "final β", "{:.3g}"),
    ("train_time_s", "train time (s)", "{:.0f}"),
)
PLOTS = (  # (file, record keys, y label)
    ("accuracy_vs_width.png", ("natural_accuracy", "robust_accuracy"), "accuracy"),
    ("stability_vs_width.png", ("perturbation_stability",), "perturbation stability"),
    ("lipschitz_vs_width.png", ("lipschitz_probe",), "local Lipschitz probe (test, ℓ1 of ∇CE)"),
)


def load_records(workdir: str) -> list[dict]:
  records = []
  for path in sorted(glob.glob(os.path.join(workdir, "*", "record.json"))):
    with open(path) as f:
      record = json.load(f)
    record["run"] = os.path.basename(os.path.dirname(path))
    records.append(record)
  if not records:
    raise FileNotFoundError(f"No finished runs (*/record.json) under {workdir}.")
  return records


def group_key(record: dict) -> str:
  """Runs that differ only in width and seed: same method, rule and starting β."""
  rule = record["beta_rule"].split("(")[0]
  return f"{record['method']} {rule} β0={record['beta_initial'] if rule == 'fixed' else _beta0(record):g}"


def _beta0(record: dict) -> float:
  return record["config"]["train"]["beta"]


def aggregate(records: list[dict]) -> dict[str, dict[int, dict]]:
  """group → width → {key: (mean, std, n)} over seeds, plus params."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for record in records:
    groups[group_key(record)][record["width"]].append(record)
  table = {}
  for group, by_width in groups.items():
    table[group] = {}
    for width, runs in sorted(by_width.items()):
      row = {"params": runs[0]["params"], "seeds": len(runs)}
      for key, _, _ in COLUMNS:
        values = np.array([r[key] for r in runs], dtype=float)
        row[key] = (values.mean(), values.std(), len(values))
      table[group][width] = row
  return table


def _cell(stat, fmt: str) -> str:
  mean, std, n = stat
  return fmt.format(mean) + (f" ± {fmt.format(std)}" if n > 1 else "")


def markdown_tables(table: dict) -> str:
  lines = []
  for group, rows in table.items():
    lines += [f"### {group}", "",
              "| width | params | seeds | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
              "|---" * (3 + len(COLUMNS)) + "|"]
    for width, row in rows.items():
      cells = [_cell(row[key], fmt) for key, _, fmt in COLUMNS]
      lines.append(f"| {width} | {row['params']:,} | {row['seeds']} | " + " | ".join(cells)
                   + " |")
    lines.append("")
  return "\n".join(lines)


def plot(table: dict, workdir: str) -> list[str]:
  paths = []
  for filename, keys, ylabel in PLOTS:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for group, rows in table.items():
      widths = list(rows)
      for key in keys:
        mean = np.array([rows[w][key][0] for w in widths])
        std = np.array([rows[w][key][1] for w in widths])
        label = group + (f" ({key.split('_')[0]})" if len(keys) > 1 else "")
        line, = ax.plot(widths, mean, marker="o", label=label)
        ax.fill_between(widths, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width multiplier k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(workdir, filename)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)
  return paths


def write(workdir: str) -> str:
  """Writes results.jsonl, the plots and report.md; returns the report's path."""
  records = load_records(workdir)
  with open(os.path.join(workdir, "results.jsonl"), "w") as f:
    for record in records:
      f.write(json.dumps({k: v for k, v in record.items() if k != "config"}) + "\n")
  table = aggregate(records)
  plots = plot(table, workdir)
  first = records[0]
  text = [
      "# Width study", "",
      f"Data set `{first['dataset']}`, {first['family']} depth {first['depth']} "
      f"(base channels {first['base_channels']}), {first['method']}, "
      f"{first['norm']} ε = {first['eps']:g}, {first['epochs']} epochs. Accuracies are on "
      "the whole test split at the best checkpoint (highest PGD robust accuracy), under the "
      f"evaluation attack PGD-{first['config']['eval']['num_steps']} "
      f"(step {first['config']['eval']['step_size']:g}, cross-entropy). Stability is the "
      "fraction of test points whose prediction the attack does not change. The Lipschitz "
      "columns are the max over attack iterates of the ℓ1 norm of the loss's input gradient "
      "(test: CE along PGD; train: the authors' KL probe along the TRADES inner attack).", "",
      markdown_tables(table),
      *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots], "",
      "Per-run records: `results.jsonl`; per-epoch metrics: `<run>/metrics.jsonl`.", ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(text))
  return path
