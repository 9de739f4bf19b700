"""The width study's pieces: sweep expansion, the report on generated run records, extra-data
mixing, and cost estimates."""
import itertools
import json
import os

import numpy as np
import pytest

from configs import default, smoke, width_study
from robustwidth import config as config_lib
from robustwidth import data, train
from robustwidth.studies import cost, report, sweep


def test_sweep_expands_the_grid_then_war_rows_after_their_reference():
  study = default.get_config()
  study.sweep.widths, study.sweep.betas, study.sweep.seeds = (1, 2, 4), (6.0, 9.0), (0, 1)
  study.sweep.war_rules, study.sweep.war_betas = ("static", "adaptive"), (6.0,)
  study.war.reference_width = 2.0
  runs = sweep.expand(study, "/study")
  names = [os.path.basename(d) for d, _ in runs]
  assert len(runs) == 3 * 2 * 2 + 2 * 2 * 1  # grid + rules × seeds × widths above 2
  assert names[:3] == ["w1_b6_s0_fixed", "w2_b6_s0_fixed", "w4_b6_s0_fixed"]
  assert set(names[12:]) == {"w4_b6_s0_static", "w4_b6_s1_static", "w4_b6_s0_adaptive",
                             "w4_b6_s1_adaptive"}
  for run_dir, run in runs:
    assert run.job == "train" and os.path.basename(run_dir) == sweep.run_name(run)
    if run.war.rule == "adaptive":
      assert run.war.reference_run == f"/study/w2_b6_s{run.seed}_fixed"
      assert names.index(os.path.basename(run.war.reference_run)) < names.index(
          os.path.basename(run_dir))
    config_lib.validate(run)


def test_war_rows_need_their_reference_in_the_grid():
  study = default.get_config()
  study.sweep.war_rules = ("static",)
  study.war.reference_width = 3.0
  with pytest.raises(config_lib.ConfigError, match="need the thin reference run in the grid"):
    config_lib.validate(study)
  study.war.reference_width = 1.0
  study.sweep.war_betas = (7.0,)
  with pytest.raises(config_lib.ConfigError, match="use values from sweep.betas"):
    config_lib.validate(study)


# Generated records: at fixed β natural accuracy rises with width while stability peaks at
# width 2 and falls; static WAR (larger β) is more stable at widths 4 and 8.
FIXED = {1: (0.80, 0.90), 2: (0.90, 0.93), 4: (0.95, 0.86), 8: (0.97, 0.80)}
STATIC = {2: (0.89, 0.94), 4: (0.93, 0.92), 8: (0.95, 0.90)}


def _record(width, natural, stability, seed, rule, beta):
  robust = natural * stability
  return {
      "width": width, "depth": 10, "family": "wide_resnet", "base_channels": 1,
      "params": 100 * width ** 2, "dataset": "digits", "seed": seed, "method": "trades",
      "norm": "linf", "eps": 0.1, "count": 10_000, "epochs": 5,
      "natural_accuracy": natural + 0.001 * seed, "robust_accuracy": robust,
      "perturbation_stability": stability - 0.001 * seed, "lipschitz_probe": 5.0 / width,
      "train_lipschitz_probe": 1.0, "beta": beta, "beta_initial": beta,
      "beta_rule": f"{rule}(...)", "train_time_s": 36.0 * width,
      "config": {"war": {"rule": rule, "gamma": 0.5, "reference_width": 1.0},
                 "train": {"beta": 6.0},
                 "eval": {"num_steps": 20, "step_size": 0.01, "restarts": 1}},
  }


@pytest.fixture()
def study_dir(tmp_path):
  for seed, (width, (nat, stab)) in itertools.product((0, 1), FIXED.items()):
    run = tmp_path / f"w{width}_b6_s{seed}_fixed"
    run.mkdir()
    (run / "record.json").write_text(json.dumps(_record(width, nat, stab, seed, "fixed", 6.0)))
  for seed, (width, (nat, stab)) in itertools.product((0, 1), STATIC.items()):
    run = tmp_path / f"w{width}_b6_s{seed}_static"
    run.mkdir()
    (run / "record.json").write_text(json.dumps(
        _record(width, nat, stab, seed, "static", 6.0 * width ** 0.5)))
  return tmp_path


def test_report_tables_verdict_and_records(study_dir):
  path = report.write(str(study_dir))
  text = open(path).read()
  assert "**The paper's trend appears**" in text
  assert "stability peaks at width 2 (93.0%) and falls to 80.0% at width 8" in text
  assert "| 4 | 1,600 | 2 | 95.05% ± 0.07% | 81.70% ± 0.00% | 85.95% ± 0.07% |" in text
  assert ("static WAR (β0 = 6, γ = 0.5) against the fixed β: width 2: β 8.49, robust -0.0% "
          "(n.s.), stability +1.0%, natural -1.0%; width 4: β 12, robust +3.9%") in text
  assert "| 8 | — (one β) | 17 |" in text  # β per width: static λ = 6·√8.
  assert "static WAR: 6 runs, 0.280 compute-hours" in text
  lines = open(study_dir / "results.jsonl").read().splitlines()
  assert len(lines) == 14 and all("config" not in json.loads(line) for line in lines)
  entry = json.load(open(study_dir / "records" / "w4_b6_s1_static.json"))
  assert entry["model"] == "WRN-10-4" and entry["clean_acc"] == pytest.approx(93.1)
  assert entry["threat_model"] == "Linf" and entry["autoattack_acc"] is None
  for plot in ("accuracy_vs_width", "stability_vs_width", "lipschitz_vs_width", "tradeoff"):
    assert (study_dir / f"{plot}.png").stat().st_size > 10_000


def test_report_without_runs_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match="run the study first"):
    report.write(str(tmp_path))


def _split(n, labels, fill):
  images = np.full((n, 2, 2, 1), fill, np.uint8)
  images[:, 0, 0, 0] = np.arange(n) % 256
  return data.Split(images, np.asarray(labels, np.int32), num_classes=10)


def test_extra_data_fills_the_end_of_every_batch_and_resumes_exactly():
  primary = _split(100, np.arange(100) % 5, 0)       # labels 0..4
  extra = _split(30, 5 + np.arange(30) % 5, 255)     # labels 5..9
  common = dict(global_batch=10, seed=3, extra=extra, extra_per_batch=4)
  batches = list(itertools.islice(data.train_batches(primary, start_step=0, **common), 40))
  for batch in batches:
    assert np.all(batch["label"][:6] < 5) and np.all(batch["label"][6:] >= 5)
  # Epochs count the primary split: 100 // 6 = 16 steps.
  first_epoch = np.concatenate([b["image"][:6, 0, 0, 0] for b in batches[:16]])
  assert len(set(np.round(first_epoch * 255).astype(int))) == 96
  # The extra stream is a permutation before it repeats.
  stream = np.concatenate([b["image"][6:, 0, 0, 0] for b in batches])
  assert sorted(np.round(stream[:30] * 255).astype(int)) == list(range(30))
  resumed = list(itertools.islice(data.train_batches(primary, start_step=13, **common), 27))
  for a, b in zip(batches[13:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_extra_data_file_is_checked_and_wired_into_the_run(tmp_path):
  digits = data.load("digits", "train")
  path = tmp_path / "extra.npz"
  np.savez(path, images=digits.images[:50], labels=digits.labels[:50])
  config = smoke.get_config()
  config.data.extra_path, config.data.extra_fraction = str(path), 0.5
  run = train._Run(config, str(tmp_path / "run"))
  assert run.extra_per_batch == 32 and len(run.extra_split) == 50
  assert run.steps_per_epoch == 1437 // 32
  np.savez(tmp_path / "bad.npz", images=np.zeros((5, 4, 4, 1), np.float32), labels=np.zeros(5))
  with pytest.raises(ValueError, match=r"have shape \(4, 4, 1\)"):
    data.load_extra(str(tmp_path / "bad.npz"), digits)
  with pytest.raises(ValueError, match="config.data.extra_path"):
    data.load_extra(str(tmp_path / "missing.npz"), digits)


def test_cost_estimates_scale_with_the_run():
  config = smoke.get_config()
  one = cost.run_flops(config)
  config.train.epochs *= 3
  three = cost.run_flops(config)
  assert three["train_flops"] == pytest.approx(3 * one["train_flops"])
  config.train.method = "standard"
  standard = cost.run_flops(config)
  # TRADES: 3 inner forward-backward passes plus two training passes; standard: one.
  assert 3 < three["train_flops"] / standard["train_flops"] < 8
  assert one["params"] == 1360


def test_cifar_study_config_describes_the_paper_grid():
  study = width_study.get_config()
  runs = sweep.expand(study, "runs/c10")
  assert len(runs) == 25 + 2 * 4
  widths = sorted({run.model.width for _, run in runs})
  assert widths == [1, 5, 10, 15, 20]
  assert {run.model.depth for _, run in runs} == {34}
  static = [run for _, run in runs if run.war.rule == "static"]
  assert [round(config_lib.war_rule(r).initial_beta(), 1) for r in static] == [
      13.4, 19.0, 23.2, 26.8]
