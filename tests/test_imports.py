"""Importing the library changes nothing in its importer's process: no environment variable, no
logging setting. In a fresh interpreter, since the test process has imported it already."""
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# The library's third-party imports come first: what they set on import is theirs, not ours.
_PROBE = """
import json, logging, os, sys
import absl.logging, flax, jax, ml_collections, numpy, optax, orbax.checkpoint, scipy

def settings():
  loggers = {"": logging.getLogger()} | {
      name: logger for name, logger in logging.Logger.manager.loggerDict.items()
      if isinstance(logger, logging.Logger)}
  return {"environ": dict(os.environ), "absl_verbosity": absl.logging.get_verbosity(),
          "loggers": {name: [logger.level, logger.propagate, logger.disabled,
                             [type(f).__name__ for f in logger.filters],
                             [type(h).__name__ for h in logger.handlers]]
                      for name, logger in loggers.items()}}

before = settings()
import robustwidth, robustwidth.checkpoint, robustwidth.train, robustwidth.studies.width
after = settings()
json.dump({"before": before, "after": after}, sys.stdout)
"""


def test_importing_robustwidth_changes_no_environment_variable_or_logging_setting():
  result = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
  settings = json.loads(result.stdout)
  before, after = settings["before"], settings["after"]
  assert after["environ"] == before["environ"]
  assert after["absl_verbosity"] == before["absl_verbosity"]
  for name, state in before["loggers"].items():
    assert after["loggers"][name] == state, name
  ours = {name: state for name, state in after["loggers"].items()
          if name.startswith("robustwidth")}
  assert all(state == [0, True, False, [], []] for state in ours.values()), ours


def test_hiding_orbaxs_notice_of_saves_without_metrics_adds_one_filter_however_often_called():
  from absl import logging as absl_logging

  from robustwidth import checkpoint
  absl_logger = absl_logging.get_absl_logger()
  kept = list(absl_logger.filters)
  try:
    checkpoint.hide_no_metrics_notice()
    checkpoint.hide_no_metrics_notice()
    added = [f for f in absl_logger.filters if f not in kept]
    assert len(added) == 1
    record = lambda message: absl_logger.makeRecord("absl", 30, __file__, 1, message, (), None)
    assert not added[0].filter(record("Step 7 did not provide metrics; it is kept anyway."))
    assert added[0].filter(record("Saved step 7."))
  finally:
    for f in absl_logger.filters[len(kept):]:
      absl_logger.removeFilter(f)


def test_the_stable_public_names_keep_their_signatures():
  # The functional contract (README, "The pure API"): these names and keywords stay.
  import inspect

  import robustwidth
  expected = {
      "attacks.pgd": ["logits_fn", "x", "y", "key", "eps", "step_size", "num_steps", "norm",
                      "loss", "init", "restarts"],
      "attacks.autoattack": ["logits_fn", "x", "y", "key", "eps", "norm", "version"],
      "losses.cross_entropy": ["logits", "labels"],
      "losses.trades_kl": ["logits_nat", "logits_adv"],
      "losses.trades": ["logits_nat", "logits_adv", "labels", "beta"],
      "metrics.robustness": ["logits_nat", "logits_adv", "labels"],
      "ntk.empirical_ntk": ["f", "params", "x1", "x2", "trace_axes"],
      "ntk.input_gradient_norm": ["logits_fn", "x", "y", "ord", "loss"],
  }
  for name, parameters in expected.items():
    module, function = name.split(".")
    signature = inspect.signature(getattr(getattr(robustwidth, module), function))
    assert [p for p in parameters if p not in signature.parameters] == [], name
