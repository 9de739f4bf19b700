"""The width study's PNG plots: metrics against width (mean ± standard error over seeds), the
accuracy–stability trade-off (one point per run) and β per width."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from robustwidth.studies import aggregate, judge  # noqa: E402
from robustwidth.studies.aggregate import Table  # noqa: E402
from robustwidth.studies.render import columns, label  # noqa: E402

PLOTS = (  # (file, record keys, y label)
    ("accuracy_vs_width.png", ("natural_accuracy", "robust_accuracy", "autoattack_accuracy"),
     "accuracy"),
    ("stability_vs_width.png", ("perturbation_stability",), "perturbation stability"),
    ("lipschitz_vs_width.png", ("lipschitz_probe",), "local Lipschitz probe (test, ℓ1 of ∇CE)"),
)


def plot(table: Table, workdir: str) -> list[str]:
  """Writes every plot into `workdir`; returns their paths."""
  paths = []
  shown = {key for key, _, _ in columns(table)}
  for filename, keys, ylabel in PLOTS:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for group, rows in table.items():
      widths = list(rows)
      for key, style in zip(keys, ("-", "--", ":")):
        if key not in shown:
          continue
        mean = np.array([rows[w].stat(key).mean for w in widths])
        se = np.array([rows[w].stat(key).se for w in widths])
        name = label(group) + (f" ({key.split('_')[0]})" if len(keys) > 1 else "")
        line, = ax.plot(widths, mean, marker="o", label=name, linestyle=style)
        ax.fill_between(widths, mean - se, mean + se, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width multiplier k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    paths.append(_save(fig, workdir, filename))
  paths.append(_tradeoff_plot(table, workdir))
  paths.append(_beta_plot(table, workdir))
  return paths


def _tradeoff_plot(table: Table, workdir: str) -> str:
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  markers = dict(zip(table, "osD^v<>"))
  runs = aggregate.runs(table)
  widths = sorted({run["width"] for run in runs})
  colors = dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.9, len(widths)))))
  for group, rows in table.items():
    for row in rows.values():
      ax.scatter(row.values("natural_accuracy"), row.values("perturbation_stability"),
                 color=colors[row.runs[0]["width"]], marker=markers[group], s=25)
  for group, marker in markers.items():
    ax.scatter([], [], color="grey", marker=marker, label=label(group))
  for width, color in colors.items():
    ax.scatter([], [], color=color, marker="s", label=f"width {width}")
  ax.set_xlabel("natural accuracy")
  ax.set_ylabel("perturbation stability")
  ax.set_title("accuracy–stability trade-off (one point per run)", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  return _save(fig, workdir, "tradeoff.png")


def _beta_plot(table: Table, workdir: str) -> str:
  """The best fixed β of the grid per width against the β each WAR rule ended with."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  widths = sorted({w for rows in table.values() for w in rows})
  best = [(w, judge.best_fixed_beta(table, w)) for w in widths]
  best = [(w, b) for w, b in best if b is not None]
  if best:
    ax.plot(*zip(*best), marker="s", color="black", label="best fixed β (grid, PGD robust acc)")
  for group, rows in aggregate.war(table).items():
    ax.errorbar(list(rows), [row.stat("beta").mean for row in rows.values()],
                yerr=[row.stat("beta").se for row in rows.values()], marker="o",
                label=label(group))
  ax.set_xscale("log", base=2)
  ax.set_xlabel("width multiplier k")
  ax.set_ylabel("β")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  return _save(fig, workdir, "beta_vs_width.png")


def _save(fig, workdir: str, filename: str) -> str:
  fig.tight_layout()
  path = os.path.join(workdir, filename)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
