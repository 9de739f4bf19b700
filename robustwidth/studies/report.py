"""The width study's report, from the records of its finished runs.

Writes `results.jsonl` (one record per run), `records/<run>.json` (RobustBench-style),
PNG plots against width and `report.md`: a plain verdict on the paper's claim (at fixed β, does
natural accuracy rise and stability fall with width, by more than stability's spread over
seeds? does WAR help the wide nets?), tables by width (mean ± standard error over seeds), the
best fixed β per width against each WAR rule's β, the paper's three claims as tests (a slope on
log width and Welch t-tests over seeds, each with its standard error, p-value and the effect it
can detect), training accuracy at the end of training and over its last quarter, and the tuning
cost WAR saves. In the verdict a difference is called significant when it exceeds twice its
standard error (over seeds, and never below the binomial error of the test set).
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
from scipy import stats  # noqa: E402

METRICS = ("natural_accuracy", "robust_accuracy", "perturbation_stability")
COLUMNS = (  # (record key, heading, format)
    ("natural_accuracy", "natural acc", "{:.2%}"),
    ("robust_accuracy", "robust acc", "{:.2%}"),
    ("perturbation_stability", "stability", "{:.2%}"),
    ("autoattack_accuracy", "AutoAttack acc", "{:.2%}"),
    ("lipschitz_probe", "Lipschitz (test, CE)", "{:.3g}"),
    ("train_lipschitz_probe", "Lipschitz (train, KL)", "{:.3g}"),
    ("train_accuracy", "train acc", "{:.2%}"),
    ("beta", "final β", "{:.3g}"),
    ("train_time_s", "train time (s)", "{:.0f}"),
)
OPTIONAL = ("autoattack_accuracy", "train_accuracy")  # columns of runs that recorded them
PLOTS = (  # (file, record keys, y label)
    ("accuracy_vs_width.png", ("natural_accuracy", "robust_accuracy", "autoattack_accuracy"),
     "accuracy"),
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
    self.se = self.std / math.sqrt(self.n) if self.n > 1 else 0.0  # over seeds alone
    error = self.se
    if count_per_run:  # A fraction of a finite test set is never known better than this.
      p = min(max(self.mean, 1e-9), 1 - 1e-9)
      error = max(error, math.sqrt(p * (1 - p) / (count_per_run * self.n)))
    self.error = error

  def format(self, fmt: str) -> str:
    return fmt.format(self.mean) + (f" ± {fmt.format(self.se)}" if self.n > 1 else "")


def significant(a: Stat, b: Stat) -> bool:
  return abs(a.mean - b.mean) > 2 * math.hypot(a.error, b.error)


def columns(records: list[dict]) -> tuple:
  """COLUMNS, less the optional ones some run did not record."""
  return tuple(c for c in COLUMNS if c[0] not in OPTIONAL or all(c[0] in r for r in records))


def aggregate(records: list[dict]) -> dict[str, dict[int, dict]]:
  """group → width → {"params", "seeds", "runs", key: Stat} for every column."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for record in records:
    groups[group_name(record)][record["width"]].append(record)
  table = {}
  for group in sorted(groups, key=lambda g: (not g.startswith("fixed"), g)):
    table[group] = {}
    for width, runs in sorted(groups[group].items()):
      row = {"params": runs[0]["params"], "seeds": len(runs), "runs": runs}
      for key, _, _ in columns(records):
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


def spread_against_effect(group: str, rows: dict) -> str:
  """Stability's spread over seeds and a run's binomial test-set error, each at its largest
  over the widths, against how far the widths move mean stability: an effect well above both
  is not noise."""
  stability = [row["perturbation_stability"] for row in rows.values()]
  count = next(iter(rows.values()))["runs"][0]["count"]
  binomial = max(math.sqrt(s.mean * (1 - s.mean) / count) for s in stability)
  means = [s.mean for s in stability]
  return (f"- At {group}, stability's spread over seeds (standard deviation) is at most "
          f"{max(s.std for s in stability):.2%} at any width and one run's binomial error on "
          f"the {count:,} test examples at most {binomial:.2%}; the widths move mean stability "
          f"by up to {max(means) - min(means):.2%}.")


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
    lines.append(spread_against_effect(group, rows))
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
    shown = [c for c in COLUMNS if c[0] in next(iter(rows.values()))]
    lines += [f"### {group}", "",
              "| width | params | seeds | " + " | ".join(h for _, h, _ in shown) + " |",
              "|---" * (3 + len(shown)) + "|"]
    for width, row in rows.items():
      cells = [row[key].format(fmt) for key, _, fmt in shown]
      lines.append(f"| {width} | {row['params']:,} | {row['seeds']} | " + " | ".join(cells)
                   + " |")
    lines.append("")
  return "\n".join(lines)


def _fixed(table: dict) -> dict[float, dict]:
  """β → rows of the fixed-β groups."""
  return {_beta0(rows[next(iter(rows))]["runs"][0]): rows for g, rows in table.items()
          if g.startswith("fixed")}


def best_fixed_beta(table: dict, width: int, key: str = "robust_accuracy") -> float | None:
  """The fixed β of the grid with the highest mean `key` at `width` (None: under two β).

  Picked on the same runs it is then compared on, so it favours the grid slightly (the
  winner's curse)."""
  candidates = [(rows[width][key].mean, beta) for beta, rows in _fixed(table).items()
                if width in rows]
  return max(candidates)[1] if len(candidates) > 1 else None


def beta_table(table: dict) -> str:
  """Per width: the best fixed β of the grid (by PGD robust accuracy) and each WAR rule's β,
  with the robust accuracy each reached."""
  fixed = _fixed(table)
  widths = sorted({w for rows in table.values() for w in rows})
  war_groups = [g for g in table if not g.startswith("fixed")]
  lines = ["| " + " | ".join(["width", "best fixed β (grid): robust acc", *war_groups]) + " |",
           "|---" * (2 + len(war_groups)) + "|"]
  for width in widths:
    best = best_fixed_beta(table, width)
    cell = (f"{best:g}: {fixed[best][width]['robust_accuracy'].format('{:.2%}')}"
            if best is not None else "— (one β)")
    cells = [f"{table[g][width]['beta'].mean:.3g}: "
             f"{table[g][width]['robust_accuracy'].format('{:.2%}')}" if width in table[g]
             else "—" for g in war_groups]
    lines.append("| " + " | ".join([str(width), cell, *cells]) + " |")
  return "\n".join(lines)


# --- The paper's claims as tests over seeds ------------------------------------------------

ALPHA, POWER = 0.05, 0.8


def _detectable(se: float, df: float, sides: int) -> float:
  """The smallest true effect a t-test with this standard error and degrees of freedom finds
  with probability POWER at level ALPHA."""
  return float((stats.t.ppf(1 - ALPHA / sides, df) + stats.t.ppf(POWER, df)) * se)


def slope_test(widths, values, alternative: str) -> dict | None:
  """Least-squares slope of `values` per doubling of width (each run one point) with its
  standard error, 95% interval, t, p (scipy's linregress; `alternative` as there) and the
  slope it detects; None with fewer than 3 runs or 2 widths."""
  x, y = np.log2(np.asarray(widths, float)), np.asarray(values, float)
  if len(x) < 3 or len(set(x)) < 2:
    return None
  fit = stats.linregress(x, y, alternative=alternative)
  df = len(x) - 2
  half = float(stats.t.ppf(0.975, df) * fit.stderr)
  sides = 2 if alternative == "two-sided" else 1
  return {"estimate": float(fit.slope), "se": float(fit.stderr),
          "low": float(fit.slope) - half, "high": float(fit.slope) + half,
          "t": float(fit.slope / fit.stderr) if fit.stderr else math.nan, "df": df,
          "p": float(fit.pvalue), "detectable": _detectable(fit.stderr, df, sides)}


def difference_test(a, b, alternative: str) -> dict | None:
  """mean(a) − mean(b) over seeds by Welch's t-test (scipy), with its standard error, p and
  the difference it detects; None with under two seeds on a side."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  if len(a) < 2 or len(b) < 2:
    return None
  se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
  estimate = float(a.mean() - b.mean())
  if se == 0:  # no spread on either side: no test
    return {"estimate": estimate, "se": 0.0, "t": math.nan, "df": math.nan, "p": math.nan,
            "detectable": math.nan}
  result = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
  sides = 2 if alternative == "two-sided" else 1
  return {"estimate": estimate, "se": se, "t": float(result.statistic), "df": float(result.df),
          "p": float(result.pvalue), "detectable": _detectable(se, result.df, sides)}


def _values(rows: dict, width: int, key: str) -> list[float]:
  return [r[key] for r in rows[width]["runs"]] if width in rows else []


def _points(rows: dict, key: str) -> tuple[list, list]:
  runs = [r for row in rows.values() for r in row["runs"]]
  return [r["width"] for r in runs], [r[key] for r in runs]


def _test_cells(test: dict | None, scale: float) -> list[str]:
  if test is None:
    return ["—"] * 4
  fmt = lambda v: f"{v * scale:+.2f}"
  return [f"{fmt(test['estimate'])} ± {abs(test['se'] * scale):.2f}",
          f"{test['t']:.2f} ({test['df']:.3g})", f"{test['p']:.3g}",
          f"{abs(test['detectable'] * scale):.2f}"]


def _supported(test: dict | None) -> str:
  if test is None or math.isnan(test["p"]):
    return "untestable"
  return "supported" if test["p"] < ALPHA else "not shown"


def claim_tests(table: dict) -> list[str]:
  """The paper's claims, each a test over seeds: (1) at a fixed β stability falls with width;
  (2) a larger β recovers stability at the widest width; (3) WAR's β matches the best fixed β
  of the grid, and beats the unadjusted β0."""
  fixed = _fixed(table)
  head = ["estimate ± SE", "t (df)", "p", "detects (80% power)"]
  lines = [
      f"Each run is one observation; p-values at α = {ALPHA}; \"detects\" is the smallest true "
      f"effect the test finds with {POWER:.0%} power at this number of seeds and this spread, "
      "so an effect that is \"not shown\" is, with that power, smaller than it. Accuracies in "
      "percentage points.", "",
      "### 1. At a fixed β, wider networks are less stable (slope on log₂ width < 0)", "",
      "Slopes per doubling of width, least squares over every (width, seed) run, with the 95% "
      "interval; natural accuracy (expected > 0) and the test Lipschitz probe (expected > 0) "
      "alongside.", "",
      "| β | stability slope " + " | ".join(head) + " | 95% interval | verdict "
      "| natural-acc slope (p, > 0) | Lipschitz slope (p, > 0) |",
      "|---" * 10 + "|"]
  for beta, rows in sorted(fixed.items()):
    test = slope_test(*_points(rows, "perturbation_stability"), "less")
    natural = slope_test(*_points(rows, "natural_accuracy"), "greater")
    lipschitz = slope_test(*_points(rows, "lipschitz_probe"), "greater")
    interval = f"[{100 * test['low']:+.2f}, {100 * test['high']:+.2f}]" if test else "—"
    side = lambda t, scale, f: f"{t['estimate'] * scale:{f}} ({t['p']:.3g})" if t else "—"
    lines.append(f"| {beta:g} | " + " | ".join(_test_cells(test, 100)) +
                 f" | {interval} | {_supported(test)} | {side(natural, 100, '+.2f')} | "
                 f"{side(lipschitz, 1, '+.3g')} |")
  widest = max(w for rows in fixed.values() for w in rows)
  betas = sorted(b for b, rows in fixed.items() if widest in rows)
  lines += ["", f"### 2. A larger β recovers stability (width {widest})", ""]
  if len(betas) < 2:
    lines.append("- Untestable: one β at this width.")
  else:
    low, high = betas[0], betas[-1]
    test = difference_test(_values(fixed[high], widest, "perturbation_stability"),
                           _values(fixed[low], widest, "perturbation_stability"), "greater")
    slopes = [slope_test(*_points(fixed[b], "perturbation_stability"), "two-sided")
              for b in (high, low)]
    lines += ["| comparison | " + " | ".join(head) + " | verdict |", "|---" * 6 + "|",
              f"| stability at β = {high:g} − at β = {low:g} (Welch, > 0) | " +
              " | ".join(_test_cells(test, 100)) + f" | {_supported(test)} |"]
    if all(slopes):
      se = math.hypot(slopes[0]["se"], slopes[1]["se"])
      df = slopes[0]["df"] + slopes[1]["df"]
      estimate = slopes[0]["estimate"] - slopes[1]["estimate"]
      flatter = {"estimate": estimate, "se": se, "t": estimate / se if se else math.nan,
                 "df": df, "p": float(stats.t.sf(estimate / se, df)) if se else math.nan,
                 "detectable": _detectable(se, df, 1)}
      lines.append(f"| stability slope at β = {high:g} − at β = {low:g} (> 0: flatter) | " +
                   " | ".join(_test_cells(flatter, 100)) + f" | {_supported(flatter)} |")
  lines += ["", "### 3. WAR finds the β of the grid without the grid", "",
            "Robust accuracy of each WAR row against the best fixed β of the grid at the same "
            "width (two-sided: WAR finds it when no difference shows; the best β is picked on "
            "these runs, which favours the grid) and against the unadjusted β0 (> 0).", "",
            "| rule | width | metric | WAR β | best fixed β | WAR − best fixed " +
            " | ".join(head) + " | WAR − fixed β0 " + " | ".join(head) + " |",
            "|---" * 13 + "|"]
  metrics_ = [k for k in ("robust_accuracy", "autoattack_accuracy")
              if all(k in row for rows in table.values() for row in rows.values())]
  for group, rows in table.items():
    if group.startswith("fixed"):
      continue
    beta0 = _beta0(next(iter(rows.values()))["runs"][0])
    for width in rows:
      for key in metrics_:
        best = best_fixed_beta(table, width, key)
        war_values = _values(rows, width, key)
        against_best = (difference_test(war_values, _values(fixed[best], width, key),
                                        "two-sided") if best is not None else None)
        against_beta0 = (difference_test(war_values, _values(fixed[beta0], width, key),
                                         "greater") if beta0 in fixed else None)
        lines.append(f"| {group} | {width} | {key.replace('_', ' ')} | "
                     f"{rows[width]['beta'].mean:.3g} | "
                     f"{'—' if best is None else f'{best:g}'} | " +
                     " | ".join(_test_cells(against_best, 100) +
                                _test_cells(against_beta0, 100)) + " |")
  return lines


def _train_curve(workdir: str, run: str) -> dict[int, float]:
  """epoch → mean training accuracy of that epoch, from the run's metrics.jsonl."""
  path = os.path.join(workdir, run, "metrics.jsonl")
  curve = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        entry = json.loads(line)
        if entry["kind"] == "train":  # a resumed run's repeated epoch: the last one counts
          curve[entry["epoch"]] = entry["train_accuracy"]
  return curve


def plateau_table(table: dict, workdir: str) -> str:
  """Per group and width: the last epoch's training accuracy and its change over the last
  quarter of the epochs (mean ± SE over seeds): near 0 means training accuracy plateaued."""
  lines = ["| group | width | train acc, last epoch | change over the last quarter of epochs |",
           "|---" * 4 + "|"]
  for group, rows in table.items():
    for width, row in rows.items():
      changes = []
      for record in row["runs"]:
        curve = _train_curve(workdir, record["run"])
        last = max(curve, default=0)
        if last >= 2:
          changes.append(curve[last] - curve[last - max(1, last // 4)])
      if "train_accuracy" not in row:
        continue
      change = Stat(changes).format("{:+.2%}") if changes else "— (no metrics.jsonl)"
      lines.append(f"| {group} | {width} | {row['train_accuracy'].format('{:.2%}')} | "
                   f"{change} |")
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


def plot(table: dict, records: list[dict], workdir: str) -> list[str]:
  paths = []
  for filename, keys, ylabel in PLOTS:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for group, rows in table.items():
      widths = list(rows)
      for key, style in zip(keys, ("-", "--", ":")):
        if key not in rows[widths[0]]:
          continue
        mean = np.array([rows[w][key].mean for w in widths])
        se = np.array([rows[w][key].se for w in widths])
        label = group + (f" ({key.split('_')[0]})" if len(keys) > 1 else "")
        line, = ax.plot(widths, mean, marker="o", label=label, linestyle=style)
        ax.fill_between(widths, mean - se, mean + se, color=line.get_color(), alpha=0.15)
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
  paths.append(_beta_plot(table, workdir))
  return paths


def _beta_plot(table: dict, workdir: str) -> str:
  """The best fixed β of the grid per width against the β each WAR rule ended with."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  widths = sorted({w for rows in table.values() for w in rows})
  best = [(w, best_fixed_beta(table, w)) for w in widths]
  best = [(w, b) for w, b in best if b is not None]
  if best:
    ax.plot(*zip(*best), marker="s", color="black", label="best fixed β (grid, PGD robust acc)")
  for group, rows in table.items():
    if not group.startswith("fixed"):
      ax.errorbar(list(rows), [row["beta"].mean for row in rows.values()],
                  yerr=[row["beta"].se for row in rows.values()], marker="o", label=group)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("width multiplier k")
  ax.set_ylabel("β")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  return _save(fig, workdir, "beta_vs_width.png")


def autoattack_note(record: dict) -> str:
  if "autoattack_accuracy" not in record:
    return ""
  return (f" AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) ran on the first "
          f"{record['autoattack_examples']} test points at the same checkpoint.")


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
      "authors' KL probe along the TRADES inner attack, last epoch)." + autoattack_note(first)
      + " Tables give the mean ± standard error over seeds.", "",
      "## Verdict", "", *verdict(table), "",
      "## Results by width", "", markdown_tables(table),
      "## β per width", "", beta_table(table), "",
      "## The paper's claims, tested", "", *claim_tests(table), "",
      "## Training accuracy", "", plateau_table(table, workdir), "",
      "## Tuning cost", "", tuning_cost(records), "",
      "## Plots", "", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots], "",
      "Per-run records: `results.jsonl`; RobustBench-style entries: `records/`; per-epoch and "
      "per-step metrics: `<run>/metrics.jsonl` and `<run>/tensorboard/`.", ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(text))
  return path
