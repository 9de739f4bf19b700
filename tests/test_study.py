"""The width study's pieces: sweep expansion, the report on generated run records, extra-data
mixing, and cost estimates."""
import importlib
import itertools
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from configs import default, fashion_width_study, smoke, width_study
from robustwidth import config as config_lib
from robustwidth import data, experiment, train
from robustwidth.checkpoint import CheckpointError
from robustwidth.studies import aggregate, cost, judge, ntk_measure, report, sweep, width
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parents[1]


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
  # Seeds 0 and 1 differ by 0.1 points: SD 0.1/√2; √(p(1 − p)/10,000) is largest at p = 0.7995.
  assert ("At fixed β = 6, stability's spread over seeds (standard deviation) is at most 0.07% "
          "at any width and one run's binomial error on the 10,000 test examples at most "
          "0.40%; the widths move mean stability by up to 13.00%.") in text
  # mean ± standard error over the two seeds (std / √2)
  assert "| 4 | 1,600 | 2 | 95.05% ± 0.05% | 81.70% ± 0.00% | 85.95% ± 0.05% |" in text
  assert ("static WAR (β0 = 6, γ = 0.5) against the fixed β: width 2: β 8.49, robust -0.0% "
          "(n.s.), stability +1.0%, natural -1.0%; width 4: β 12, robust +3.9%") in text
  assert "| 8 | — (one β) | 17: " in text  # β per width: static λ = 6·√8.
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


def _run(rule, beta, width, stability, lipschitz=1.0, gamma=0.5):
  return {"width": width, "params": 10 * width, "count": 100,
          "perturbation_stability": stability, "lipschitz_probe": lipschitz,
          "config": {"war": {"rule": rule, "gamma": gamma}, "train": {"beta": beta}}}


def test_runs_group_by_rule_and_beta_listed_in_numeric_order():
  # Sorted by their labels, "fixed β = 12" came before "fixed β = 3".
  records = [_run("static", 3.0, 2, 0.5), _run("fixed", 12.0, 1, 0.9),
             _run("fixed", 3.0, 2, 0.7), _run("fixed", 3.0, 1, 0.80, lipschitz=4.0),
             _run("fixed", 3.0, 1, 0.84, lipschitz=6.0), _run("adaptive", 3.0, 2, 0.6, gamma=9.0)]
  table = aggregate.aggregate(records)
  key = aggregate.GroupKey
  assert list(table) == [key("fixed", 3.0), key("fixed", 12.0), key("adaptive", 3.0),
                         key("static", 3.0, 0.5)]  # γ belongs to the static rule only
  assert list(table[key("fixed", 3.0)]) == [1, 2]
  row = table[key("fixed", 3.0)][1]
  stability = row.stat("perturbation_stability")
  # (0.80, 0.84): SD 0.02·√2, SE 0.02, below the binomial error √(0.82 · 0.18 / 200).
  assert row.seeds == 2 and row.params == 10 and stability.mean == pytest.approx(0.82)
  assert stability.std == pytest.approx(0.028284, rel=1e-4)
  assert stability.se == pytest.approx(0.02)
  assert stability.error == pytest.approx(0.027166, rel=1e-4)
  lipschitz = row.stat("lipschitz_probe")  # not a fraction: no binomial floor
  assert (lipschitz.mean, lipschitz.error) == pytest.approx((5.0, 1.0))
  assert list(aggregate.fixed(table)) == [3.0, 12.0]
  assert aggregate.points(table[key("fixed", 3.0)], "perturbation_stability") == (
      [1, 1, 2], [0.80, 0.84, 0.7])


def test_late_change_spans_the_last_quarter_of_the_epochs():
  curve = {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8, 5: 0.85, 6: 0.9, 7: 0.92, 8: 0.95}
  assert aggregate.late_change(curve) == pytest.approx(0.95 - 0.9)  # epochs 6 → 8
  assert aggregate.late_change({1: 0.5, 2: 0.7, 3: 0.8}) == pytest.approx(0.1)  # at least one
  assert aggregate.late_change({1: 0.5}) is None and aggregate.late_change({}) is None


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


def test_cost_estimates_match_a_hand_count_of_an_mlps_matrix_products():
  # A 256-unit MLP on 8×8 digits, batch B: a forward pass is F = 2·B·(64·256 + 256·10) FLOPs
  # of matrix products; a backward pass to the input or to the weights costs F again, and the
  # gradient at the hidden layer alone H = 2·B·256·10. XLA's count adds elementwise work (ReLU,
  # softmax, projections, the SGD update): allowed up to 5%.
  config = smoke.get_config()
  config.model.family, config.model.depth, config.model.base_channels = "mlp", 1, 256
  batch, steps = config.train.batch_size, (1437 // 64) * config.train.epochs
  forward, hidden = 2 * batch * (64 * 256 + 256 * 10), 2 * batch * 256 * 10
  config.train.method = "standard"
  standard = cost.run_flops(config)
  assert standard["params"] == 64 * 256 + 256 + 256 * 10 + 10
  assert standard["train_flops"] == pytest.approx((2 * forward + hidden) * steps, rel=0.05)
  # TRADES with K inner steps: the KL target's clean pass, K forward and input-backward
  # passes, then the adversarial pass and the clean one (unless XLA reuses the target's) and
  # both weight gradients.
  config.train.method = "trades"
  k = config.train.attack_steps
  trades = cost.run_flops(config)["train_flops"] / steps
  assert (2 * k + 4) * forward + 2 * hidden <= trades
  assert trades <= ((2 * k + 5) * forward + 2 * hidden) * 1.05


def test_cifar_study_config_describes_the_paper_grid():
  study = width_study.get_config()
  runs = sweep.expand(study, "runs/c10")
  assert len(runs) == 25 + 2 * 4
  widths = sorted({run.model.width for _, run in runs})
  assert widths == [1, 5, 10, 15, 20]
  assert {run.model.depth for _, run in runs} == {34}
  static = [run for _, run in runs if run.war.rule == "static"]
  assert [round(experiment.war_rule(r).initial_beta(), 1) for r in static] == [
      13.4, 19.0, 23.2, 26.8]


@pytest.mark.parametrize("key,value,message", [
    ("betas", (6.0, -1.0), "config.sweep.betas = (6.0, -1.0) is not allowed: each value must be "
     "a number >= 0"),
    ("widths", (1, 1.5), "config.sweep.widths = (1, 1.5) is not allowed: each value must be an "
     "integer >= 1"),
    ("widths", (1, 2, 1), "each value may appear once"),
    ("seeds", (0, -1), "config.sweep.seeds = (0, -1) is not allowed"),
    ("betas", (6.0, float("inf")), "it must be finite"),
])
def test_the_whole_grid_is_validated_before_the_first_run(key, value, message, monkeypatch,
                                                           tmp_path):
  # (6, -1) trained the β = 6 runs, then failed; (1, 1.5) ran width 1 twice.
  started = []
  monkeypatch.setattr(train, "train_and_evaluate", lambda c, d: started.append(d))
  study = default.get_config()
  study.sweep[key] = value
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    width.run(study, str(tmp_path))
  assert not started


def _tiny_study():
  """A width study of one-epoch standard-trained MLPs: about a second per run."""
  study = smoke.get_config()
  study.job = "width_study"
  study.model.family, study.model.depth, study.model.base_channels = "mlp", 1, 4
  study.train.method, study.train.epochs, study.train.batch_size = "standard", 1, 256
  study.eval.num_steps, study.eval.batch_size = 1, 360
  study.sweep.widths, study.sweep.seeds, study.sweep.betas = (1,), (0,), (6.0,)
  return study


def test_an_extended_study_trains_only_its_new_runs(monkeypatch, tmp_path):
  # Each run's config embedded the whole sweep section, so an extended grid made every
  # finished run "a finished run with a different configuration".
  monkeypatch.setattr(report, "write", lambda workdir: os.path.join(workdir, "report.md"))
  trained = []
  run_class = train._Run
  monkeypatch.setattr(train, "_Run", lambda config, workdir: (
      trained.append(os.path.basename(workdir)), run_class(config, workdir))[1])
  study = _tiny_study()
  width.run(study, str(tmp_path))
  assert trained == ["w1_b6_s0_fixed"]
  first = json.loads((tmp_path / "w1_b6_s0_fixed" / "record.json").read_text())
  study.sweep.widths, study.sweep.seeds = (1, 2), (0, 1)
  width.run(study, str(tmp_path))
  assert trained[1:] == ["w2_b6_s0_fixed", "w1_b6_s1_fixed", "w2_b6_s1_fixed"]
  assert json.loads((tmp_path / "w1_b6_s0_fixed" / "record.json").read_text()) == first
  study.train.lr = 0.1  # A real change of every run is refused, naming the key.
  with pytest.raises(CheckpointError, match=re.escape(
      "(config.train.lr: record 0.05, now 0.1)")):
    width.run(study, str(tmp_path))


CONFIGS = {"trades": None, "authors": "method=pgd_at,dataset=cifar100", "width_study": None,
           "cifar10_war_extra": "extra=/data/extra.npz", "cifar10_methods": "method=mart",
           "fashion_width_study": None, "default": None, "smoke": None, "ntk_width": None}


@pytest.mark.parametrize("devices", [1, 8, 16])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_shipped_config_validates_on_1_8_and_16_devices(name, devices):
  # eval.batch_size had to divide the device count: 500, 360 and 200 failed on 16 devices.
  config = importlib.import_module(f"configs.{name}").get_config(CONFIGS[name])
  if config.job == "width_study":
    runs = sweep.validated_runs(config, "runs/study", devices)
    assert len(runs) == len(sweep.expand(config, "runs/study"))
  elif config.job == "ntk_width":
    for method, family in itertools.product(config.ntk_width.trained_methods,
                                            config.ntk_width.trained_families):
      config_lib.validate(ntk_measure.train_config(config, method, family, 1, "standard"),
                          devices)
  else:
    config_lib.validate(config, devices)
  assert config_lib.eval_padded_batch(config, devices) % devices == 0


def test_print_commands_validates_for_the_device_count_given(tmp_path):
  # It validated for one device whatever the cluster: a 48-device launch failed at start-up.
  result = subprocess.run(
      [sys.executable, "-m", "launch.sweep", "--config", "configs/default.py", "--workdir",
       str(tmp_path), "--print_commands", "--device_count=48"], cwd=REPO,
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(
      "ConfigError: config.train.batch_size = 128 is not allowed: the global batch is split "
      "evenly over the 48 devices")
  runs = sweep.validated_runs(default.get_config(), str(tmp_path), 16)
  assert len(runs) == 15


def test_launch_sweep_plans_a_study_and_leaves_running_it_to_launch_main(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "launch.sweep", "--config", "configs/default.py", "--workdir",
       str(tmp_path)], cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Give one of --print_commands or --dry_run; run the " \
      "study itself with python -m launch.main" in result.stderr
  assert os.listdir(tmp_path) == []  # Nothing ran.


# --- The Fashion-MNIST study end to end, and the statistics of its report ------------------

def test_slope_and_difference_tests_match_their_closed_forms():
  widths = np.array([1, 1, 1, 4, 4, 4, 16, 16, 16])
  values = np.array([0.80, 0.82, 0.81, 0.78, 0.79, 0.77, 0.74, 0.76, 0.73])
  x = np.log2(widths)
  slope, intercept = np.polyfit(x, values, 1)
  residual = values - (slope * x + intercept)
  se = np.sqrt(np.sum(residual ** 2) / 7 / np.sum((x - x.mean()) ** 2))
  test = judge.slope_test(widths, values, "less")
  assert test["estimate"] == pytest.approx(slope) and test["se"] == pytest.approx(se)
  assert test["df"] == 7 and test["p"] == pytest.approx(stats.t.cdf(slope / se, 7))
  assert test["low"] < slope < test["high"] < 0

  a, b = np.array([0.70, 0.74, 0.71]), np.array([0.66, 0.65, 0.69, 0.64])
  va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4
  t = (a.mean() - b.mean()) / np.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)  # Welch–Satterthwaite
  welch = judge.difference_test(a, b, "greater")
  assert welch["t"] == pytest.approx(t) and welch["df"] == pytest.approx(df)
  assert welch["p"] == pytest.approx(stats.t.sf(t, df))
  # An effect of `detectable` is found with about 80% power (noncentral t).
  power = stats.nct.sf(stats.t.ppf(0.95, df), df, welch["detectable"] / welch["se"])
  assert power == pytest.approx(0.8, abs=0.01)
  assert judge.difference_test(a[:1], b, "greater") is None


def _tiny_fashion_study(data_dir):
  study = fashion_width_study.get_config("family=mlp")
  study.data.data_dir, study.data.train_examples = str(data_dir), 0
  study.model.base_channels = 4
  study.sweep.widths, study.sweep.betas, study.sweep.seeds = (1, 2), (1.0, 4.0), (0, 1)
  study.sweep.war_betas = (1.0,)
  study.train.epochs, study.train.batch_size, study.train.lr = 2, 32, 0.1
  study.train.attack_steps = 2
  study.eval.every_epochs, study.eval.num_steps, study.eval.batch_size = 2, 3, 64
  study.eval.autoattack_examples = 16
  return study


def test_fashion_study_runs_end_to_end_and_reports_the_claims(tmp_path):
  data_dir, workdir = tmp_path / "idx", tmp_path / "study"
  data_dir.mkdir()
  helpers.write_fashion_idx(data_dir, counts=(192, 64), learnable=True)
  study = _tiny_fashion_study(data_dir)
  width.run(study, str(workdir))
  runs = sweep.expand(study, str(workdir))
  assert len(runs) == 8 + 2 * 2  # the grid, then static and adaptive at width 2
  records = report.load_records(str(workdir))
  for record in records:
    assert record["dataset"] == "fashion_mnist" and record["count"] == 64
    assert record["autoattack_examples"] == 16
    assert 0 <= record["autoattack_accuracy"] <= record["autoattack_natural_accuracy"]
    assert record["autoattack_accuracy_after"]["square"] == record["autoattack_accuracy"]
    assert 0 < record["train_accuracy"] <= 1
  assert max(r["natural_accuracy"] for r in records) > 0.3  # the patches are learnt (chance: 0.1)

  text = (workdir / "report.md").read_text()
  for heading in ("## The paper's claims, tested", "### 1. At a fixed β, wider",
                  "### 2. A larger β recovers stability (width 2)", "### 3. WAR finds",
                  "## Training accuracy", "AutoAttack acc", "train acc"):
    assert heading in text
  # One slope per fixed β; one row per WAR rule, width and metric (PGD, AutoAttack).
  assert len([l for l in text.splitlines() if l.startswith(("| 1 | ", "| 4 | "))]) >= 2
  war_rows = [l for l in text.splitlines() if l.startswith(("| static WAR", "| adaptive WAR"))
              and "accuracy |" in l]
  assert len(war_rows) == 4
  assert (workdir / "beta_vs_width.png").stat().st_size > 10_000
  entry = json.load(open(workdir / "records" / "w2_b1_s0_static.json"))
  assert entry["model"] == "mlp-1-2" and entry["autoattack_examples"] == 16

  # Finished runs are reused: a second pass trains nothing.
  stamps = {d: os.path.getmtime(os.path.join(d, "record.json")) for d, _ in runs}
  width.run(study, str(workdir))
  assert stamps == {d: os.path.getmtime(os.path.join(d, "record.json")) for d, _ in runs}
