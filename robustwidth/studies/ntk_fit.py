"""The NTK width study's fits: each quantity as a power law of width, with a Student-t
interval on the slope (`ntk.fit_power_law`), over every (width, seed) point of one setting."""
from typing import NamedTuple

import ml_collections
import numpy as np

from robustwidth import ntk
from robustwidth.studies.ntk_measure import quantities

PHASES = ("init", "trained")


class Setting(NamedTuple):
  """What one fit pools over seeds and widths."""
  phase: str                  # init or trained
  method: str | None          # the training method (None at initialization)
  family: str
  parameterization: str


def setting(record: dict) -> Setting:
  """The setting of a measurement or a fit record."""
  return Setting(record["phase"], record["method"], record["family"],
                 record["parameterization"])


def settings(records: list[dict]) -> list[Setting]:
  """The records' settings: initialization first, then by method, family, parameterization."""
  return sorted({setting(r) for r in records},
                key=lambda k: (PHASES.index(k.phase), k.method or "", k.family,
                               k.parameterization))


def fits(records: list[dict], study: ml_collections.ConfigDict) -> list[dict]:
  """One record per setting and quantity: the fit, or why there is none."""
  results = []
  for key in settings(records):
    rows = [r for r in records if setting(r) == key]
    for quantity in quantities(study):
      rows_with = [r for r in rows if r[quantity] is not None]
      if not rows_with:
        continue
      widths = np.array([r["width"] for r in rows_with], float)
      values = np.array([r[quantity] for r in rows_with], float)
      base = {**key._asdict(), "quantity": quantity}
      usable = np.isfinite(values) & (values > 0)
      if usable.sum() < 3 or np.unique(widths[usable]).size < 2:
        results.append({**base, "slope": None, "num_points": int(usable.sum()),
                        "note": "too few positive values to fit"})
        continue
      fit = ntk.fit_power_law(widths[usable], values[usable], confidence=study.confidence)
      results.append({**base, **fit, "dropped": int((~usable).sum())})
  return results
