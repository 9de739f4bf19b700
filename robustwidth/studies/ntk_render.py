"""The NTK width study's plots (each quantity against width, log-log, with its fitted power
law) and report.md (the fitted slopes by family and setting, the trained runs' accuracies, the
NTK implementations' cost)."""
import os

import matplotlib
import numpy as np

from robustwidth import config as config_lib
from robustwidth.studies.ntk_fit import Setting, setting, settings
from robustwidth.studies.ntk_measure import quantities, train_config

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(records: list[dict], fits: list[dict], study, workdir: str) -> list[str]:
  """One figure per (phase, training method, family): each quantity against width, log-log,
  mean ± std over seeds per parameterization, with the fitted power law dashed."""
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  names, paths = quantities(study), []
  fit_of = {(setting(f), f["quantity"]): f for f in fits}
  for phase, method in dict.fromkeys((k.phase, k.method) for k in settings(records)):
    for family in sorted({k.family for k in settings(records)
                          if (k.phase, k.method) == (phase, method)}):
      columns = 5
      rows_count = -(-len(names) // columns)
      figure, axes = plt.subplots(rows_count, columns, figsize=(3.2 * columns, 2.8 * rows_count),
                                  squeeze=False)
      for axis, quantity in zip(axes.flat, names):
        for parameterization in study.parameterizations:
          key = Setting(phase, method, family, parameterization)
          rows = [r for r in records if setting(r) == key and r[quantity] is not None]
          if not rows:
            continue
          widths = sorted({r["width"] for r in rows})
          by_width = [[r[quantity] for r in rows if r["width"] == w] for w in widths]
          means = [np.mean(v) for v in by_width]
          spreads = [np.std(v) for v in by_width]
          line = axis.errorbar(widths, means, yerr=spreads, marker="o", capsize=3,
                               label=parameterization)
          fit = fit_of.get((key, quantity))
          if fit and fit["slope"] is not None:
            grid = np.geomspace(min(widths), max(widths), 20)
            axis.plot(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], "--",
                      color=line[0].get_color(), linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(quantity, fontsize=9)
        axis.set_xlabel("width")
      for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
      axes.flat[names.index("ntk_trace")].legend(fontsize=8)
      figure.suptitle(f"{family}, {phase}" + ("" if method is None else f" {method}"))
      figure.tight_layout()
      name = phase if method is None else f"{phase}_{method}"
      path = os.path.join("plots", f"{family}_{name}.png")
      figure.savefig(os.path.join(workdir, path), dpi=90)
      plt.close(figure)
      paths.append(path)
  return paths


def _format_fit(fit) -> str:
  if fit["slope"] is None:
    return "n/a"
  return f"{fit['slope']:+.3f} [{fit['slope_low']:+.3f}, {fit['slope_high']:+.3f}]"


def _setup(config, wall_s: float) -> list[str]:
  """What was measured, on what, and how to read a cell."""
  study = config.ntk_width
  lines = [
      f"Data: {config.data.name}, the first {study.num_examples} test examples for gradient "
      f"norms and the probe, the first {study.kernel_examples} for the NTK (its Gram matrix "
      f"over examples × classes). Seeds at initialization: {study.init_seeds}. Probe: ℓ∞, "
      f"ε = {config.attack.eps}, {config.train.attack_steps} steps of "
      f"{config.train.attack_step_size}. NTK: {study.implementation}. Wall time: "
      f"{wall_s:.0f} s.", "",
      f"Each cell: the slope of log(quantity) against log(width) with its "
      f"{study.confidence:.0%} interval (Student t over every (width, seed) point). 0 means no "
      "growth with width; 0.5 is the √width growth of the reading notes (docs/paper.md §3). For "
      "reference, wide-network theory predicts an NTK trace growing linearly with width under "
      "standard parameterization (slope 1, less at small widths, where the width-independent "
      "input layer still weighs) and converging under NTK parameterization (slope 0).", ""]
  first = study.parameterizations[0]
  if len(study.parameterizations) > 1:
    lines += [f"At initialization every parameterization computes the same function "
              f"(models/layers.py), so the gradient norms and the probe are measured once, "
              f"under {first}, and hold for all (\"= {first}\"); the NTK differs and is "
              "measured under each.", ""]
  if study.trained_families and study.trained_methods:
    described = []
    for method in study.trained_methods:
      run = train_config(config, method, study.trained_families[0], 1, first)
      described.append(method if method == "standard" else
                       f"{method} (β = {config_lib.beta(run):g}, {run.train.attack_steps} "
                       f"inner steps of {run.train.attack_step_size})")
    examples = config.data.train_examples or "all"
    lines += [f"After training: {' and '.join(described)} training on {examples} training "
              f"examples, {config.train.epochs} epochs, lr {config.train.lr} (NTK "
              f"parameterization: {study.ntk_lr}; {config.train.schedule}), batch "
              f"{config.train.batch_size}, one run per method, parameterization and width, "
              "measured at the checkpoint with the best PGD robust accuracy (columns named by "
              "the training method; accuracies under Trained runs).", ""]
  return lines


def _slope_tables(study, records: list[dict], fits: list[dict]) -> list[str]:
  """Per family: one row per quantity, one column per (phase, method, parameterization)."""
  first = study.parameterizations[0]
  fit_of = {(setting(f), f["quantity"]): f for f in fits}
  fitted = {(k.phase, k.method, k.parameterization) for k in settings(fits)}
  columns = [(phase, method, parameterization)
             for phase, method in dict.fromkeys((k.phase, k.method) for k in settings(fits))
             for parameterization in study.parameterizations
             if (phase, method, parameterization) in fitted]
  lines = []
  for family in dict.fromkeys(r["family"] for r in records):
    widths = sorted({r["width"] for r in records if r["family"] == family})
    lines += [f"## {family} (widths {widths} × base_channels {study[family].base_channels}, "
              f"depth {study[family].depth})", "",
              "| quantity | " + " | ".join(
                  f"{p} {q}" if m is None else f"{m}-trained {q}" for p, m, q in columns) + " |",
              "|---" * (len(columns) + 1) + "|"]
    for quantity in quantities(study):
      cells = []
      for phase, method, parameterization in columns:
        fit = fit_of.get((Setting(phase, method, family, parameterization), quantity))
        if fit is None:
          measured_once = (phase == "init" and parameterization != first
                           and (Setting(phase, method, family, first), quantity) in fit_of)
          cells.append(f"= {first}" if measured_once else "—")
        else:
          cells.append(_format_fit(fit))
      lines.append(f"| {quantity} | " + " | ".join(cells) + " |")
    lines.append("")
  return lines


def _trained_table(records: list[dict]) -> list[str]:
  trained = [r for r in records if r["phase"] == "trained"]
  if not trained:
    return []
  return ["## Trained runs", "", "| method | family | parameterization | width | train acc | "
          "natural acc | robust acc (PGD) |", "|---|---|---|---|---|---|---|",
          *[f"| {r['method']} | {r['family']} | {r['parameterization']} | {r['width']} | "
            f"{r['train_accuracy']:.1%} | {r['natural_accuracy']:.1%} | "
            f"{r['robust_accuracy']:.1%} |" for r in trained], ""]


def _implementation_table(implementations: list[dict]) -> list[str]:
  if not implementations:
    return []
  lines = ["## NTK implementations", "",
           "Untraced kernel of the kernel examples, standard parameterization: median wall "
           "time of the compiled function, its compile time and XLA's compiled estimate of "
           "its temporary buffers.", "",
           "| family | width | params | implementation | time (s) | compile (s) | "
           "temp memory (MiB) |", "|---|---|---|---|---|---|---|"]
  for r in implementations:
    memory = "—" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.2f}"
    lines.append(f"| {r['family']} | {r['width']} | {r['params']:,} | {r['implementation']} "
                 f"| {r['time_s']:.4f} | {r['compile_s']:.1f} | {memory} |")
  return lines + [""]


def report(config, records: list[dict], fits: list[dict], implementations: list[dict],
           plots: list[str], wall_s: float) -> str:
  """The whole report.md."""
  lines = (["# NTK width study", "", *_setup(config, wall_s),
            *_slope_tables(config.ntk_width, records, fits), *_trained_table(records),
            *_implementation_table(implementations), "## Plots", ""]
           + [f"![{p}]({p})" for p in plots] + [""])
  return "\n".join(lines)
