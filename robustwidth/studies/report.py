"""The width study's report, from the records of its finished runs.

Writes `results.jsonl` (one record per run), `records/<run>.json` (RobustBench-style),
PNG plots against width and `report.md`: a plain verdict on the paper's claim (at fixed β, does
natural accuracy rise and stability fall with width? does WAR help the wide nets?), tables by
width (mean ± std over seeds), the β each rule arrived at, and the tuning cost WAR saves.
A difference is called significant when it exceeds twice its standard error (over seeds, and
never below the binomial error of the test set).
"""
import collections
import glob
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METRICS = ("natural_accuracy", "robust_accuracy", "perturbation_stability")
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
    raise FileNotFoundError(f"No finished runs (*/record.json) under {workdir}: run the study "
                            "first (python -m launch.main --config ... --workdir ...).")
  return records


def _rule(record: dict) -> str:
  return record["config"]["war"]["rule"]


def _beta0(record: dict) -> float:
  return record["config"]["train"]["beta"]


def group_name(record: dict) -> str:
  """Runs that differ only in width and seed."""
  rule, beta0 = _rule(record), _beta0(record)
  if rule == "fixed":
    return f"fixed β = {beta0:g}"
  if rule == "static":
    return f"static WAR (β0 = {beta0:g}, γ = {record['config']['war']['gamma']:g})"
  return f"adaptive WAR (β0 = {beta0:g})"


class Stat:
  """Mean, spread and standard error of one metric over seeds."""

  def __init__(self, values, count_per_run: int | None = None):
    values = np.asarray(values, dtype=float)
    self.mean, self.n = float(values.mean()), len(values)
    self.std = float(values.std(ddof=1)) if self.n > 1 else 0.0
    error = self.std / math.sqrt(self.n) if self.n > 1 else 0.0
    if count_per_run:  # A fraction of a finite test set is never known better than this.
      p = min(max(self.mean, 1e-9), 1 - 1e-9)
      error = max(error, math.sqrt(p * (1 - p) / (count_per_run * self.n)))
    self.error = error

  def format(self, fmt: str) -> str:
    return fmt.format(self.mean) + (f" ± {fmt.format(self.std)}" if self.n > 1 else "")


def significant(a: Stat, b: Stat) -> bool:
  return abs(a.mean - b.mean) > 2 * math.hypot(a.error, b.error)


def aggregate(records: list[dict]) -> dict[str, dict[int, dict]]:
  """group → width → {"params", "seeds", key: Stat} for every column."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for record in records:
    groups[group_name(record)][record["width"]].append(record)
  table = {}
  for group in sorted(groups, key=lambda g: (not g.startswith("fixed"), g)):
    table[group] = {}
    for width, runs in sorted(groups[group].items()):
      row = {"params": runs[0]["params"], "seeds": len(runs), "runs": runs}
      for key, _, _ in COLUMNS:
        row[key] = Stat([r[key] for r in runs],
                        runs[0]["count"] if key in METRICS else None)
      table[group][width] = row
  return table


def _falls_after_peak(rows: dict, key: str) -> bool:
  """The widest width is significantly below the best width."""
  widths = list(rows)
  peak = max(widths, key=lambda w: rows[w][key].mean)
  return peak != widths[-1] and significant(rows[peak][key], rows[widths[-1]][key])


def _trend(rows: dict, key: str) -> str:
  """How `key` moves across widths, in words, judged by significance."""
  widths = list(rows)
  first, last = rows[widths[0]][key], rows[widths[-1]][key]
  peak_width = max(widths, key=lambda w: rows[w][key].mean)
  pct = lambda s: f"{s.mean:.1%}"
  if peak_width != widths[0] and _falls_after_peak(rows, key):
    return (f"peaks at width {peak_width} ({pct(rows[peak_width][key])}) and falls to "
            f"{pct(last)} at width {widths[-1]}")
  if significant(first, last):
    verb = "rises" if last.mean > first.mean else "falls"
    return f"{verb} from {pct(first)} (width {widths[0]}) to {pct(last)} (width {widths[-1]})"
  return (f"shows no significant change ({pct(first)} at width {widths[0]}, {pct(last)} at "
          f"width {widths[-1]})")


def verdict(table: dict) -> list[str]:
  lines = []
  fixed = {g: rows for g, rows in table.items() if g.startswith("fixed")}
  for group, rows in fixed.items():
    widths = list(rows)
    nat_rises = significant(rows[widths[0]]["natural_accuracy"],
                            rows[widths[-1]]["natural_accuracy"]) and (
        rows[widths[-1]]["natural_accuracy"].mean > rows[widths[0]]["natural_accuracy"].mean)
    claim = ("**The paper's trend appears**: wider networks gain natural accuracy and lose "
             "perturbation stability" if nat_rises and _falls_after_peak(
                 rows, "perturbation_stability") else
             "**The paper's trend does not appear** in this setting")
    lines.append(f"- At {group}: natural accuracy {_trend(rows, 'natural_accuracy')}; "
                 f"stability {_trend(rows, 'perturbation_stability')}; robust accuracy "
                 f"{_trend(rows, 'robust_accuracy')}. {claim}.")
  for group, rows in table.items():
    if group.startswith("fixed"):
      continue
    base = next((r for g, r in fixed.items()
                 if g == f"fixed β = {_beta0(next(iter(rows.values()))['runs'][0]):g}"), None)
    if base is None:
      continue
    parts = []
    for width, row in rows.items():
      if width not in base:
        continue
      delta = row["robust_accuracy"].mean - base[width]["robust_accuracy"].mean
      sig = significant(row["robust_accuracy"], base[width]["robust_accuracy"])
      parts.append(f"width {width}: β {row['beta'].mean:.3g}, robust {delta:+.1%}"
                   f"{'' if sig else ' (n.s.)'}, stability "
                   f"{row['perturbation_stability'].mean - base[width]['perturbation_stability'].mean:+.1%}"
                   f", natural {row['natural_accuracy'].mean - base[width]['natural_accuracy'].mean:+.1%}")
    lines.append(f"- {group} against the fixed β: " + "; ".join(parts) + ".")
  seeds = {row["seeds"] for rows in table.values() for row in rows.values()}
  lines.append(f"- Seeds per point: {', '.join(map(str, sorted(seeds)))}. n.s. = not "
               "significant (difference below twice its standard error).")
  return lines


def markdown_tables(table: dict) -> str:
  lines = []
  for group, rows in table.items():
    lines += [f"### {group}", "",
              "| width | params | seeds | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
              "|---" * (3 + len(COLUMNS)) + "|"]
    for width, row in rows.items():
      cells = [row[key].format(fmt) for key, _, fmt in COLUMNS]
      lines.append(f"| {width} | {row['params']:,} | {row['seeds']} | " + " | ".join(cells)
                   + " |")
    lines.append("")
  return "\n".join(lines)


def beta_table(table: dict) -> str:
  """Per width: the best fixed β of the grid (by robust accuracy) and each WAR rule's β."""
  fixed = {g: rows for g, rows in table.items() if g.startswith("fixed")}
  widths = sorted({w for rows in table.values() for w in rows})
  war_groups = [g for g in table if not g.startswith("fixed")]
  lines = ["| " + " | ".join(["width", "best fixed β (grid)", *war_groups]) + " |",
           "|---" * (2 + len(war_groups)) + "|"]
  for width in widths:
    candidates = [(rows[width]["robust_accuracy"].mean, g) for g, rows in fixed.items()
                  if width in rows]
    best = max(candidates)[1].split("= ")[1] if len(candidates) > 1 else "— (one β)"
    cells = [f"{table[g][width]['beta'].mean:.3g}" if width in table[g] else "—"
             for g in war_groups]
    lines.append("| " + " | ".join([str(width), best, *cells]) + " |")
  return "\n".join(lines)


def tuning_cost(records: list[dict]) -> str:
  """Runs and compute the β grid spends on widths above the reference, against one WAR run
  per width (both need the thin reference grid, which is not counted)."""
  reference = records[0]["config"]["war"]["reference_width"]
  wide = [r for r in records if r["width"] > reference]
  grid = [r for r in wide if _rule(r) == "fixed"]
  lines = []
  for rule in sorted({_rule(r) for r in wide} - {"fixed"}):
    war_runs = [r for r in wide if _rule(r) == rule]
    hours = lambda runs: sum(r["train_time_s"] for r in runs) / 3600
    lines.append(f"- {rule} WAR: {len(war_runs)} runs, {hours(war_runs):.3f} compute-hours on "
                 f"this machine, against {len(grid)} runs and {hours(grid):.3f} compute-hours "
                 f"for the fixed-β grid at the same widths: {len(grid) - len(war_runs)} runs "
                 f"saved ({1 - len(war_runs) / max(len(grid), 1):.0%}).")
  if not lines:
    return "- No WAR rows in this study."
  if len({_beta0(r) for r in grid}) == 1:
    lines.append("- With a single β in the grid, the grid is as cheap as WAR; the saving is the "
                 "grid over several β a user would otherwise run at every width.")
  return "\n".join(lines)


def robustbench_record(record: dict) -> dict:
  """A RobustBench-style entry for one run (accuracies in percent)."""
  evaluation = record["config"]["eval"]
  return {
      "model": f"WRN-{record['depth']}-{record['width']}", "width": record["width"],
      "depth": record["depth"], "base_channels": record["base_channels"],
      "params": record["params"], "dataset": record["dataset"],
      "threat_model": {"linf": "Linf", "l2": "L2", "l1": "L1"}[record["norm"]],
      "eps": record["eps"],
      "clean_acc": 100 * record["natural_accuracy"],
      "pgd_acc": 100 * record["robust_accuracy"],
      "pgd_settings": {"steps": evaluation["num_steps"], "step_size": evaluation["step_size"],
                       "restarts": evaluation["restarts"], "loss": "ce"},
      "autoattack_acc": None,  # Filled by `python -m launch.evaluate --workdir RUN`.
      "perturbation_stability": 100 * record["perturbation_stability"],
      "training": record["method"], "beta_rule": record["beta_rule"], "seed": record["seed"],
      "epochs": record["epochs"],
  }


def plot(table: dict, records: list[dict], workdir: str) -> list[str]:
  paths = []
  for filename, keys, ylabel in PLOTS:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for group, rows in table.items():
      widths = list(rows)
      for key in keys:
        mean = np.array([rows[w][key].mean for w in widths])
        std = np.array([rows[w][key].std for w in widths])
        label = group + (f" ({key.split('_')[0]})" if len(keys) > 1 else "")
        line, = ax.plot(widths, mean, marker="o", label=label,
                        linestyle="-" if key != "robust_accuracy" else "--")
        ax.fill_between(widths, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width multiplier k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    paths.append(_save(fig, workdir, filename))
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  markers = dict(zip(table, "osD^v<>"))
  widths = sorted({r["width"] for r in records})
  colors = dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.9, len(widths)))))
  for record in records:
    ax.scatter(record["natural_accuracy"], record["perturbation_stability"],
               color=colors[record["width"]], marker=markers[group_name(record)], s=25)
  for group, marker in markers.items():
    ax.scatter([], [], color="grey", marker=marker, label=group)
  for width, color in colors.items():
    ax.scatter([], [], color=color, marker="s", label=f"width {width}")
  ax.set_xlabel("natural accuracy")
  ax.set_ylabel("perturbation stability")
  ax.set_title("accuracy–stability trade-off (one point per run)", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  paths.append(_save(fig, workdir, "tradeoff.png"))
  return paths


def _save(fig, workdir: str, filename: str) -> str:
  fig.tight_layout()
  path = os.path.join(workdir, filename)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


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
  table = aggregate(records)
  plots = plot(table, records, workdir)
  first = records[0]
  evaluation = first["config"]["eval"]
  text = [
      "# Width study", "",
      f"Data set `{first['dataset']}`, {first['family']} depth {first['depth']} (base channels "
      f"{first['base_channels']}), {first['method']}, {first['norm']} ε = {first['eps']:g}, "
      f"{first['epochs']} epochs; {len(records)} runs. Accuracies are on the whole test split "
      f"({first['count']} examples) at each run's best checkpoint (highest PGD robust "
      f"accuracy), under PGD-{evaluation['num_steps']} (step {evaluation['step_size']:g}, "
      "cross-entropy, uniform start). Stability is the fraction of test points whose "
      "prediction the attack leaves unchanged. The Lipschitz columns are the max over attack "
      "iterates of the ℓ1 norm of the loss's input gradient (test: CE along PGD; train: the "
      "authors' KL probe along the TRADES inner attack, last epoch).", "",
      "## Verdict", "", *verdict(table), "",
      "## Results by width", "", markdown_tables(table),
      "## β per width", "", beta_table(table), "",
      "## Tuning cost", "", tuning_cost(records), "",
      "## Plots", "", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots], "",
      "Per-run records: `results.jsonl`; RobustBench-style entries: `records/`; per-epoch and "
      "per-step metrics: `<run>/metrics.jsonl` and `<run>/tensorboard/`.", ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(text))
  return path
