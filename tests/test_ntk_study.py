"""The NTK width study end to end on a tiny configuration, and the premise it relies on."""
import json
import os
import re

import jax
import numpy as np
import pytest

from configs import ntk_width as ntk_width_config
from robustwidth import config as config_lib
from robustwidth import data, evaluation, lipschitz, ntk
from robustwidth.models import create_model, functional, model_logits_fn
from robustwidth.studies import ntk_fit, ntk_measure, ntk_width


def _tiny_config():
  c = ntk_width_config.get_config("quick=True")
  study = c.ntk_width
  study.mlp.widths = (1, 2)
  study.mlp.base_channels = 4
  study.num_examples = 4
  study.kernel_examples = 2
  study.trained_parameterizations = ("standard",)
  c.train.attack_steps = 1
  c.train.batch_size = 256
  c.eval.batch_size = 360
  return c


def test_config_names_the_job():
  config = ntk_width_config.get_config()
  assert config.job == "ntk_width"
  assert set(config.ntk_width.families) == {"mlp", "cnn", "wide_resnet"}


@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist"])
def test_config_reaches_4096_units_in_the_two_layer_net_under_trades(dataset):
  config = ntk_width_config.get_config(f"dataset={dataset}")
  study = config.ntk_width
  assert config.data.name == dataset and config.attack.eps == 0.1
  assert study.mlp.depth == 1 and max(study.mlp.widths) * study.mlp.base_channels >= 4096
  assert set(study.trained_methods) == {"standard", "trades"}
  assert set(study.trained_parameterizations) == {"standard", "ntk"}
  for method in study.trained_methods:  # each training run is a valid, distinct run
    runs = {p: ntk_measure.train_config(config, method, "mlp", 256, p)
            for p in study.trained_parameterizations}
    for run in runs.values():
      config_lib.validate(run)
      assert (run.train.method, run.model.depth, run.model.width) == (method, 1, 256)
    assert (runs["standard"].train.lr, runs["ntk"].train.lr) == (
        config.train.lr, study.ntk_lr)


def test_unknown_dataset_is_refused():
  with pytest.raises(ValueError, match="dataset='mnist'"):
    ntk_width_config.get_config("dataset=mnist")


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_parameterizations_compute_the_same_function_at_initialization(family):
  """Why the study measures gradient norms at initialization under one parameterization."""
  x = data.to_float(data.load("digits", "test").images[:3])
  y = np.array([0, 1, 2], np.int32)
  norms = [lipschitz.input_gradient_norm(model_logits_fn(create_model(
      family, width=1, num_classes=10, input_shape=(8, 8, 1), seed=3, depth=1,
      base_channels=2, parameterization=p)), x, y) for p in ("standard", "ntk")]
  np.testing.assert_allclose(norms[0], norms[1], rtol=1e-5)


def test_fits_pool_each_setting_over_its_widths_and_seeds():
  study = _tiny_config().ntk_width
  blank = dict.fromkeys(ntk_measure.quantities(study))
  record = lambda phase, method, width, trace: {
      **blank, "phase": phase, "method": method, "family": "mlp", "parameterization": "ntk",
      "width": width, "ntk_trace": trace}
  # Trace 2·√width, 10% higher at seed 1 at every width: the slope stays 1/2 exactly.
  records = [record("trained", "standard", 1, 1.0), record("trained", "standard", 4, 2.0)]
  records += [record("init", None, w, 2 * w ** 0.5 * 1.1 ** seed)
              for w in (1, 4, 16) for seed in (0, 1)]
  records.append(record("init", None, 16, 0.0))  # not positive: left out of the fit
  fits = ntk_fit.fits(records, study)
  assert [(f["phase"], f["quantity"]) for f in fits] == [("init", "ntk_trace"),
                                                         ("trained", "ntk_trace")]
  assert fits[0]["slope"] == pytest.approx(0.5)
  assert fits[0]["intercept"] == pytest.approx(np.log(2) + 0.5 * np.log(1.1))
  assert (fits[0]["num_points"], fits[0]["dropped"]) == (6, 1)
  assert fits[1]["slope"] is None and fits[1]["num_points"] == 2  # one point per width
  assert ntk_fit.setting(fits[1]) == ntk_fit.Setting("trained", "standard", "mlp", "ntk")


def test_tiny_study_writes_report_fits_and_plots(tmp_path):
  workdir = str(tmp_path)
  ntk_width.run(_tiny_config(), workdir)
  with open(os.path.join(workdir, "measurements.jsonl")) as f:
    records = [json.loads(line) for line in f]
  # init: 2 widths × 2 parameterizations × 2 seeds; trained: 2 widths × 2 methods.
  assert sum(r["phase"] == "init" for r in records) == 8
  trained = [r for r in records if r["phase"] == "trained"]
  assert sorted((r["method"], r["width"]) for r in trained) == [
      ("standard", 1), ("standard", 2), ("trades", 1), ("trades", 2)]
  with open(os.path.join(workdir, "fits.jsonl")) as f:
    fits = [json.loads(line) for line in f]
  trace_fits = [f for f in fits if f["quantity"] == "ntk_trace" and f["phase"] == "init"]
  assert len(trace_fits) == 2
  for fit in trace_fits:
    assert fit["slope_low"] <= fit["slope"] <= fit["slope_high"] and fit["num_points"] == 4
  # A fit of every quantity per training method; 2 widths × 1 seed are too few for a slope.
  for method in ("standard", "trades"):
    method_fits = [f for f in fits if f["method"] == method]
    assert len(method_fits) == len(ntk_measure.quantities(_tiny_config().ntk_width))
    assert all(f["slope"] is None and f["num_points"] == 2 for f in method_fits)
  report = open(os.path.join(workdir, "report.md")).read()
  assert "| ntk_trace |" in report and "## NTK implementations" in report
  assert "trades-trained standard" in report and "β = 6" in report
  for name in ("init", "trained_standard", "trained_trades"):
    assert os.path.getsize(os.path.join(workdir, "plots", f"mlp_{name}.png")) > 0
  with open(os.path.join(workdir, "implementations.jsonl")) as f:
    assert len(f.readlines()) == 2 * len(ntk.IMPLEMENTATIONS)
  assert jax.device_count() == 8  # the study ran on the test set-up's 8 fake devices
  # The TRADES records are measured on the TRADES runs' own checkpoints.
  run_dir = os.path.join(workdir, "trained", "trades_mlp_standard_w2")
  with open(os.path.join(run_dir, "record.json")) as f:
    assert json.load(f)["config"]["train"]["method"] == "trades"
  graphdef, params, model_state, _ = evaluation.restore_model(run_dir, "best")
  x = data.to_float(data.load("digits", "test").images[:4])
  y = data.load("digits", "test").labels[:4]
  norms = lipschitz.input_gradient_norm(functional.logits_fn(graphdef, params, model_state), x,
                                        y, ord=1)
  record = next(r for r in trained if (r["method"], r["width"]) == ("trades", 2))
  np.testing.assert_allclose(record["grad_ce_l1"], np.mean(norms), rtol=1e-4)


def test_bad_study_config_is_refused(tmp_path):
  config = _tiny_config()
  config.ntk_width.mlp.widths = (4, 4)
  with pytest.raises(ValueError, match="two or more distinct widths"):
    ntk_width.run(config, str(tmp_path))
  config = _tiny_config()
  config.ntk_width.trained_methods = ("standard", "tradez")
  with pytest.raises(ValueError, match=re.escape(
      "config.ntk_width.trained_methods = ('standard', 'tradez') is not allowed")):
    ntk_width.run(config, str(tmp_path))
