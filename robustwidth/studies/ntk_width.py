"""The NTK width study (docs/paper.md §3): how input-gradient norms, the authors' local-Lipschitz
probe and the empirical NTK scale with width, at initialization over many seeds and after
training with each method of `trained_methods` (standard, TRADES, ...), under standard and NTK
parameterization.

Per family, parameterization, width and seed (and training method), on fixed test examples:
  grad_{ce,margin}_{l1,l2,linf}  mean over examples of ‖∇ₓL‖ (ℓ1 is the Lipschitz norm for ℓ∞)
  lipschitz_probe                mean of the authors' probe: max of ‖∇ₓ KL‖₁ over the iterates
                                 of the TRADES inner attack (config.attack.eps and
                                 config.train.attack_steps / attack_step_size)
  ntk_trace                      Tr Θ / n over the n × K outputs of n examples
  ntk_eig{1,2,...}               top eigenvalues of that [nK, nK] NTK Gram matrix
Each quantity is fitted as log(value) = slope · log(width) + c over every (width, seed) point
of one (phase, training method, family, parameterization), with a Student-t confidence interval
on the slope (`ntk.fit_power_law`).

This module validates the config (`config.validate`) and runs the study: `ntk_measure` measures (and trains the runs
it measures after training), `ntk_fit` fits, `ntk_render` plots and writes the report.

Workdir: measurements.jsonl (one record per model), fits.jsonl (one per fitted slope),
implementations.jsonl (time and memory of each NTK implementation), report.md, plots/*.png
and trained/<method>_<family>_<parameterization>_w<width>/ (the training runs, reused when
finished).
"""
import json
import os
import time

import jax
import ml_collections

from robustwidth import config as config_lib
from robustwidth import data
from robustwidth.studies import ntk_fit, ntk_measure, ntk_render


def _write_jsonl(path: str, records: list[dict]) -> None:
  with open(path, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Measures, fits and reports; see the module docstring for what goes where."""
  config_lib.validate(config)
  study = config.ntk_width
  start = time.time()
  primary = jax.process_index() == 0
  log = (lambda message: print(message, flush=True)) if primary else (lambda message: None)
  os.makedirs(workdir, exist_ok=True)
  split = data.load(config.data.name, "test", data_dir=config.data.data_dir)
  records = ntk_measure.init_records(config, split, log)
  records += ntk_measure.trained_records(config, split, workdir, log)
  fits = ntk_fit.fits(records, study)
  implementations = (ntk_measure.implementation_records(config, split, log)
                     if study.timing_repeats else [])
  if not primary:
    return
  _write_jsonl(os.path.join(workdir, "measurements.jsonl"), records)
  _write_jsonl(os.path.join(workdir, "fits.jsonl"), fits)
  _write_jsonl(os.path.join(workdir, "implementations.jsonl"), implementations)
  plots = ntk_render.plot(records, fits, study, workdir)
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write(ntk_render.report(config, records, fits, implementations, plots, time.time() - start))
  log(f"Report: {path}")
