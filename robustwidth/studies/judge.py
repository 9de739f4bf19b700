"""The width study's judgements: when a difference between two means is significant, how a
metric moves across widths, and the paper's claims as tests over seeds (a slope on log₂ width,
Welch's t-test, and the effect each can detect at the study's seeds and spread)."""
import math

import numpy as np
from scipy import stats

from robustwidth.studies.aggregate import Row, Stat, Table, fixed

ALPHA, POWER = 0.05, 0.8


def significant(a: Stat, b: Stat) -> bool:
  """The means differ by more than twice their combined error."""
  return abs(a.mean - b.mean) > 2 * math.hypot(a.error, b.error)


def peak(rows: dict[int, Row], key: str) -> int:
  """The width with the highest mean `key`."""
  return max(rows, key=lambda w: rows[w].stat(key).mean)


def falls_after_peak(rows: dict[int, Row], key: str) -> bool:
  """The widest width is significantly below the best width."""
  best, widest = peak(rows, key), list(rows)[-1]
  return best != widest and significant(rows[best].stat(key), rows[widest].stat(key))


def rises(rows: dict[int, Row], key: str) -> bool:
  """The widest width is significantly above the thinnest."""
  first, last = rows[list(rows)[0]].stat(key), rows[list(rows)[-1]].stat(key)
  return significant(first, last) and last.mean > first.mean


def best_fixed_beta(table: Table, width: int, key: str = "robust_accuracy") -> float | None:
  """The fixed β of the grid with the highest mean `key` at `width` (None: under two β).

  Picked on the same runs it is then compared on, so it favours the grid slightly (the
  winner's curse)."""
  candidates = [(rows[width].stat(key).mean, beta) for beta, rows in fixed(table).items()
                if width in rows]
  return max(candidates)[1] if len(candidates) > 1 else None


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


def slope_difference_test(a: dict, b: dict) -> dict:
  """Slope `a` − slope `b` (two `slope_test` results, independent runs), one-sided (> 0)."""
  se = math.hypot(a["se"], b["se"])
  df = a["df"] + b["df"]
  estimate = a["estimate"] - b["estimate"]
  return {"estimate": estimate, "se": se, "t": estimate / se if se else math.nan, "df": df,
          "p": float(stats.t.sf(estimate / se, df)) if se else math.nan,
          "detectable": _detectable(se, df, 1)}


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


def verdict(test: dict | None) -> str:
  """supported (p < ALPHA), not shown, or untestable (no test, or no spread)."""
  if test is None or math.isnan(test["p"]):
    return "untestable"
  return "supported" if test["p"] < ALPHA else "not shown"
