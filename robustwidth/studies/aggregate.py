"""The width study's runs grouped by a typed key (the β rule and its β) and width, each metric
as its mean and standard error over seeds.

A record is one finished run's record.json; a table maps each `GroupKey` to its rows by width.
"""
import collections
import dataclasses
import math
from typing import NamedTuple

import numpy as np

FRACTIONS = ("natural_accuracy", "robust_accuracy", "perturbation_stability")
RULES = ("fixed", "adaptive", "static")  # the order the groups are listed in


class GroupKey(NamedTuple):
  """Runs that differ only in width and seed."""
  rule: str                   # config.war.rule: fixed, static or adaptive
  beta: float                 # config.train.beta: the fixed β, or WAR's β0
  gamma: float | None = None  # static WAR's γ (None under the other rules)


def group_key(record: dict) -> GroupKey:
  war = record["config"]["war"]
  return GroupKey(war["rule"], record["config"]["train"]["beta"],
                  war["gamma"] if war["rule"] == "static" else None)


def _order(key: GroupKey) -> tuple:
  return RULES.index(key.rule), key.beta, key.gamma or 0.0


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


@dataclasses.dataclass(frozen=True)
class Row:
  """The runs of one group at one width (one per seed)."""
  runs: tuple[dict, ...]

  @property
  def params(self) -> int:
    return self.runs[0]["params"]

  @property
  def seeds(self) -> int:
    return len(self.runs)

  def values(self, key: str) -> list[float]:
    return [run[key] for run in self.runs]

  def stat(self, key: str) -> Stat:
    """`key` over seeds; the accuracies' error never below their binomial error."""
    return Stat(self.values(key), self.runs[0]["count"] if key in FRACTIONS else None)


Table = dict[GroupKey, dict[int, Row]]


def aggregate(records: list[dict]) -> Table:
  """Group → width → Row, the fixed rule first, then by rule, β and γ; widths ascending."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for record in records:
    groups[group_key(record)][record["width"]].append(record)
  return {key: {width: Row(tuple(runs)) for width, runs in sorted(groups[key].items())}
          for key in sorted(groups, key=_order)}


def runs(table: Table) -> list[dict]:
  return [run for rows in table.values() for row in rows.values() for run in row.runs]


def recorded(table: Table, key: str) -> bool:
  """Every run recorded `key`."""
  return all(key in run for run in runs(table))


def fixed(table: Table) -> dict[float, dict[int, Row]]:
  """β → rows of the fixed-β groups."""
  return {key.beta: rows for key, rows in table.items() if key.rule == "fixed"}


def war(table: Table) -> Table:
  """The WAR groups (every rule but fixed)."""
  return {key: rows for key, rows in table.items() if key.rule != "fixed"}


def points(rows: dict[int, Row], key: str) -> tuple[list, list]:
  """(widths, values) with one point per run."""
  pairs = [(run["width"], run[key]) for row in rows.values() for run in row.runs]
  return [w for w, _ in pairs], [v for _, v in pairs]


def late_change(curve: dict[int, float]) -> float | None:
  """The change of an epoch → value curve over the last quarter of its epochs (at least one);
  None under two epochs."""
  last = max(curve, default=0)
  if last < 2:
    return None
  return curve[last] - curve[last - max(1, last // 4)]
