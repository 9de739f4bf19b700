"""The width study's report.md: a verdict in words, tables by width, β per width, the paper's
claims as tests, training accuracy and tuning cost. Labels are made from the typed group keys
here only; nothing downstream reads them back."""
import math
import os

from robustwidth.studies import aggregate, judge
from robustwidth.studies.aggregate import GroupKey, Row, Stat, Table

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
TEST_HEADINGS = ("estimate ± SE", "t (df)", "p", "detects (80% power)")


def label(key: GroupKey) -> str:
  if key.rule == "fixed":
    return f"fixed β = {key.beta:g}"
  if key.rule == "static":
    return f"static WAR (β0 = {key.beta:g}, γ = {key.gamma:g})"
  return f"adaptive WAR (β0 = {key.beta:g})"


def mean_and_error(stat: Stat, fmt: str) -> str:
  return fmt.format(stat.mean) + (f" ± {fmt.format(stat.se)}" if stat.n > 1 else "")


def columns(table: Table) -> tuple:
  """COLUMNS, less the optional ones some run did not record."""
  return tuple(c for c in COLUMNS if c[0] not in OPTIONAL or aggregate.recorded(table, c[0]))


def _trend(rows: dict[int, Row], key: str) -> str:
  """How `key` moves across widths, in words, judged by significance."""
  widths = list(rows)
  first, last = rows[widths[0]].stat(key), rows[widths[-1]].stat(key)
  peak_width = judge.peak(rows, key)
  pct = lambda s: f"{s.mean:.1%}"
  if peak_width != widths[0] and judge.falls_after_peak(rows, key):
    return (f"peaks at width {peak_width} ({pct(rows[peak_width].stat(key))}) and falls to "
            f"{pct(last)} at width {widths[-1]}")
  if judge.significant(first, last):
    verb = "rises" if last.mean > first.mean else "falls"
    return f"{verb} from {pct(first)} (width {widths[0]}) to {pct(last)} (width {widths[-1]})"
  return (f"shows no significant change ({pct(first)} at width {widths[0]}, {pct(last)} at "
          f"width {widths[-1]})")


def spread_against_effect(key: GroupKey, rows: dict[int, Row]) -> str:
  """Stability's spread over seeds and a run's binomial test-set error, each at its largest
  over the widths, against how far the widths move mean stability: an effect well above both
  is not noise."""
  stability = [row.stat("perturbation_stability") for row in rows.values()]
  count = next(iter(rows.values())).runs[0]["count"]
  binomial = max(math.sqrt(s.mean * (1 - s.mean) / count) for s in stability)
  means = [s.mean for s in stability]
  return (f"- At {label(key)}, stability's spread over seeds (standard deviation) is at most "
          f"{max(s.std for s in stability):.2%} at any width and one run's binomial error on "
          f"the {count:,} test examples at most {binomial:.2%}; the widths move mean stability "
          f"by up to {max(means) - min(means):.2%}.")


def verdict(table: Table) -> list[str]:
  lines = []
  for key, rows in table.items():
    if key.rule != "fixed":
      continue
    claim = ("**The paper's trend appears**: wider networks gain natural accuracy and lose "
             "perturbation stability" if judge.rises(rows, "natural_accuracy")
             and judge.falls_after_peak(rows, "perturbation_stability") else
             "**The paper's trend does not appear** in this setting")
    lines.append(f"- At {label(key)}: natural accuracy {_trend(rows, 'natural_accuracy')}; "
                 f"stability {_trend(rows, 'perturbation_stability')}; robust accuracy "
                 f"{_trend(rows, 'robust_accuracy')}. {claim}.")
    lines.append(spread_against_effect(key, rows))
  for key, rows in aggregate.war(table).items():
    base = table.get(GroupKey("fixed", key.beta))
    if base is None:
      continue
    parts = []
    for width, row in rows.items():
      if width not in base:
        continue
      change = lambda k: row.stat(k).mean - base[width].stat(k).mean
      sig = judge.significant(row.stat("robust_accuracy"), base[width].stat("robust_accuracy"))
      parts.append(f"width {width}: β {row.stat('beta').mean:.3g}, robust "
                   f"{change('robust_accuracy'):+.1%}{'' if sig else ' (n.s.)'}, stability "
                   f"{change('perturbation_stability'):+.1%}, natural "
                   f"{change('natural_accuracy'):+.1%}")
    lines.append(f"- {label(key)} against the fixed β: " + "; ".join(parts) + ".")
  seeds = {row.seeds for rows in table.values() for row in rows.values()}
  lines.append(f"- Seeds per point: {', '.join(map(str, sorted(seeds)))}. n.s. = not "
               "significant (difference below twice its standard error).")
  return lines


def markdown_tables(table: Table) -> str:
  lines = []
  shown = columns(table)
  for key, rows in table.items():
    lines += [f"### {label(key)}", "",
              "| width | params | seeds | " + " | ".join(h for _, h, _ in shown) + " |",
              "|---" * (3 + len(shown)) + "|"]
    for width, row in rows.items():
      cells = [mean_and_error(row.stat(k), fmt) for k, _, fmt in shown]
      lines.append(f"| {width} | {row.params:,} | {row.seeds} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def beta_table(table: Table) -> str:
  """Per width: the best fixed β of the grid (by PGD robust accuracy) and each WAR rule's β,
  with the robust accuracy each reached."""
  fixed = aggregate.fixed(table)
  widths = sorted({w for rows in table.values() for w in rows})
  war = aggregate.war(table)
  lines = ["| " + " | ".join(["width", "best fixed β (grid): robust acc",
                              *map(label, war)]) + " |",
           "|---" * (2 + len(war)) + "|"]
  robust = lambda row: f"{row.stat('beta').mean:.3g}: " + mean_and_error(
      row.stat("robust_accuracy"), "{:.2%}")
  for width in widths:
    best = judge.best_fixed_beta(table, width)
    cell = (f"{best:g}: " + mean_and_error(fixed[best][width].stat("robust_accuracy"), "{:.2%}")
            if best is not None else "— (one β)")
    cells = [robust(rows[width]) if width in rows else "—" for rows in war.values()]
    lines.append("| " + " | ".join([str(width), cell, *cells]) + " |")
  return "\n".join(lines)


def _test_cells(test: dict | None, scale: float) -> list[str]:
  if test is None:
    return ["—"] * 4
  fmt = lambda v: f"{v * scale:+.2f}"
  return [f"{fmt(test['estimate'])} ± {abs(test['se'] * scale):.2f}",
          f"{test['t']:.2f} ({test['df']:.3g})", f"{test['p']:.3g}",
          f"{abs(test['detectable'] * scale):.2f}"]


def _values(rows: dict[int, Row], width: int, key: str) -> list[float]:
  return rows[width].values(key) if width in rows else []


def claim_tests(table: Table) -> list[str]:
  """The paper's claims, each a test over seeds: (1) at a fixed β stability falls with width;
  (2) a larger β recovers stability at the widest width; (3) WAR's β matches the best fixed β
  of the grid, and beats the unadjusted β0."""
  fixed = aggregate.fixed(table)
  head = TEST_HEADINGS
  lines = [
      f"Each run is one observation; p-values at α = {judge.ALPHA}; \"detects\" is the "
      f"smallest true effect the test finds with {judge.POWER:.0%} power at this number of "
      "seeds and this spread, so an effect that is \"not shown\" is, with that power, smaller "
      "than it. Accuracies in percentage points.", "",
      "### 1. At a fixed β, wider networks are less stable (slope on log₂ width < 0)", "",
      "Slopes per doubling of width, least squares over every (width, seed) run, with the 95% "
      "interval; natural accuracy (expected > 0) and the test Lipschitz probe (expected > 0) "
      "alongside.", "",
      "| β | stability slope " + " | ".join(head) + " | 95% interval | verdict "
      "| natural-acc slope (p, > 0) | Lipschitz slope (p, > 0) |",
      "|---" * 10 + "|"]
  for beta, rows in sorted(fixed.items()):
    test = judge.slope_test(*aggregate.points(rows, "perturbation_stability"), "less")
    natural = judge.slope_test(*aggregate.points(rows, "natural_accuracy"), "greater")
    lipschitz = judge.slope_test(*aggregate.points(rows, "lipschitz_probe"), "greater")
    interval = f"[{100 * test['low']:+.2f}, {100 * test['high']:+.2f}]" if test else "—"
    side = lambda t, scale, f: f"{t['estimate'] * scale:{f}} ({t['p']:.3g})" if t else "—"
    lines.append(f"| {beta:g} | " + " | ".join(_test_cells(test, 100)) +
                 f" | {interval} | {judge.verdict(test)} | {side(natural, 100, '+.2f')} | "
                 f"{side(lipschitz, 1, '+.3g')} |")
  widest = max(w for rows in fixed.values() for w in rows)
  betas = sorted(b for b, rows in fixed.items() if widest in rows)
  lines += ["", f"### 2. A larger β recovers stability (width {widest})", ""]
  if len(betas) < 2:
    lines.append("- Untestable: one β at this width.")
  else:
    low, high = betas[0], betas[-1]
    test = judge.difference_test(_values(fixed[high], widest, "perturbation_stability"),
                                 _values(fixed[low], widest, "perturbation_stability"),
                                 "greater")
    slopes = [judge.slope_test(*aggregate.points(fixed[b], "perturbation_stability"),
                               "two-sided") for b in (high, low)]
    lines += ["| comparison | " + " | ".join(head) + " | verdict |", "|---" * 6 + "|",
              f"| stability at β = {high:g} − at β = {low:g} (Welch, > 0) | " +
              " | ".join(_test_cells(test, 100)) + f" | {judge.verdict(test)} |"]
    if all(slopes):
      flatter = judge.slope_difference_test(*slopes)
      lines.append(f"| stability slope at β = {high:g} − at β = {low:g} (> 0: flatter) | " +
                   " | ".join(_test_cells(flatter, 100)) + f" | {judge.verdict(flatter)} |")
  lines += ["", "### 3. WAR finds the β of the grid without the grid", "",
            "Robust accuracy of each WAR row against the best fixed β of the grid at the same "
            "width (two-sided: WAR finds it when no difference shows; the best β is picked on "
            "these runs, which favours the grid) and against the unadjusted β0 (> 0).", "",
            "| rule | width | metric | WAR β | best fixed β | WAR − best fixed " +
            " | ".join(head) + " | WAR − fixed β0 " + " | ".join(head) + " |",
            "|---" * 13 + "|"]
  metrics = [k for k in ("robust_accuracy", "autoattack_accuracy")
             if aggregate.recorded(table, k)]
  for key, rows in aggregate.war(table).items():
    for width in rows:
      for metric in metrics:
        best = judge.best_fixed_beta(table, width, metric)
        war_values = _values(rows, width, metric)
        against_best = (judge.difference_test(war_values, _values(fixed[best], width, metric),
                                              "two-sided") if best is not None else None)
        against_beta0 = (judge.difference_test(war_values,
                                               _values(fixed[key.beta], width, metric),
                                               "greater") if key.beta in fixed else None)
        lines.append(f"| {label(key)} | {width} | {metric.replace('_', ' ')} | "
                     f"{rows[width].stat('beta').mean:.3g} | "
                     f"{'—' if best is None else f'{best:g}'} | " +
                     " | ".join(_test_cells(against_best, 100) +
                                _test_cells(against_beta0, 100)) + " |")
  return lines


def plateau_table(table: Table, curves: dict[str, dict[int, float]]) -> str:
  """Per group and width: the last epoch's training accuracy and its change over the last
  quarter of the epochs (mean ± SE over seeds; `curves`: run → epoch → training accuracy):
  near 0 means training accuracy plateaued."""
  lines = ["| group | width | train acc, last epoch | change over the last quarter of epochs |",
           "|---" * 4 + "|"]
  if not aggregate.recorded(table, "train_accuracy"):
    return "\n".join(lines)
  for key, rows in table.items():
    for width, row in rows.items():
      changes = [aggregate.late_change(curves[run["run"]]) for run in row.runs]
      changes = [c for c in changes if c is not None]
      change = mean_and_error(Stat(changes), "{:+.2%}") if changes else "— (no metrics.jsonl)"
      lines.append(f"| {label(key)} | {width} | "
                   f"{mean_and_error(row.stat('train_accuracy'), '{:.2%}')} | {change} |")
  return "\n".join(lines)


def tuning_cost(records: list[dict]) -> str:
  """Runs and compute the β grid spends on widths above the reference, against one WAR run
  per width (both need the thin reference grid, which is not counted)."""
  reference = records[0]["config"]["war"]["reference_width"]
  wide = [(aggregate.group_key(r), r) for r in records if r["width"] > reference]
  grid = [r for key, r in wide if key.rule == "fixed"]
  hours = lambda runs: sum(r["train_time_s"] for r in runs) / 3600
  lines = []
  for rule in sorted({key.rule for key, _ in wide} - {"fixed"}):
    war_runs = [r for key, r in wide if key.rule == rule]
    lines.append(f"- {rule} WAR: {len(war_runs)} runs, {hours(war_runs):.3f} compute-hours on "
                 f"this machine, against {len(grid)} runs and {hours(grid):.3f} compute-hours "
                 f"for the fixed-β grid at the same widths: {len(grid) - len(war_runs)} runs "
                 f"saved ({1 - len(war_runs) / max(len(grid), 1):.0%}).")
  if not lines:
    return "- No WAR rows in this study."
  if len({aggregate.group_key(r).beta for r in grid}) == 1:
    lines.append("- With a single β in the grid, the grid is as cheap as WAR; the saving is the "
                 "grid over several β a user would otherwise run at every width.")
  return "\n".join(lines)


def _autoattack_note(record: dict) -> str:
  if "autoattack_accuracy" not in record:
    return ""
  return (f" AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) ran on the first "
          f"{record['autoattack_examples']} test points at the same checkpoint.")


def document(records: list[dict], table: Table, curves: dict[str, dict[int, float]],
             plots: list[str]) -> str:
  """The whole report.md."""
  first = records[0]
  evaluation = first["config"]["eval"]
  return "\n".join([
      "# Width study", "",
      f"Data set `{first['dataset']}`, {first['family']} depth {first['depth']} (base channels "
      f"{first['base_channels']}), {first['method']}, {first['norm']} ε = {first['eps']:g}, "
      f"{first['epochs']} epochs; {len(records)} runs. Accuracies are on the whole test split "
      f"({first['count']} examples) at each run's best checkpoint (highest PGD robust "
      f"accuracy), under PGD-{evaluation['num_steps']} (step {evaluation['step_size']:g}, "
      "cross-entropy, uniform start). Stability is the fraction of test points whose "
      "prediction the attack leaves unchanged. The Lipschitz columns are the max over attack "
      "iterates of the ℓ1 norm of the loss's input gradient (test: CE along PGD; train: the "
      "authors' KL probe along the TRADES inner attack, last epoch)." + _autoattack_note(first)
      + " Tables give the mean ± standard error over seeds.", "",
      "## Verdict", "", *verdict(table), "",
      "## Results by width", "", markdown_tables(table),
      "## β per width", "", beta_table(table), "",
      "## The paper's claims, tested", "", *claim_tests(table), "",
      "## Training accuracy", "", plateau_table(table, curves), "",
      "## Tuning cost", "", tuning_cost(records), "",
      "## Plots", "", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots], "",
      "Per-run records: `results.jsonl`; RobustBench-style entries: `records/`; per-epoch and "
      "per-step metrics: `<run>/metrics.jsonl` and `<run>/tensorboard/`.", ""])
