"""The experiment configuration: every key with its default, argument parsing for
`configs/file.py:key=value,...`, and validation at start-up.

`base()` is locked (`ConfigDict.lock()`): each file in configs/ starts from it and changes
values, so a misspelt key, in a file or on the command line, is ml_collections' error naming the
key and its closest match, not a silently ignored setting.
"""
import ast
import json
import math

import ml_collections

from robustwidth import attacks, data, losses, ntk, optim, steps, war
from robustwidth.models import CNN_HEADS, FAMILIES, PARAMETERIZATIONS

JOBS = ("train", "width_study", "ntk_width")
NTK_FAMILIES = ("mlp", "cnn", "wide_resnet")  # the families config.ntk_width has settings for
DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A configuration key or value that cannot be used; the message says which and why."""


def base() -> ml_collections.ConfigDict:
  """Every configuration key, with defaults for one TRADES run on the digits data; locked, so
  only these keys can be set."""
  c = ml_collections.ConfigDict()
  c.job = "train"        # train | width_study (a sweep plus its report) | ntk_width
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"          # digits | fashion_mnist | cifar10 | cifar100
  # TFDS data dir (CIFAR, Fashion-MNIST), or the directory of Fashion-MNIST's IDX files
  # (default: TFDS's, then the Debian package's /usr/share/datasets/fashion-mnist).
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  c.data.train_examples = 0  # train on the first N training examples (0: all of them)
  c.data.crop_padding = 0    # random crop after zero-padding by this many pixels (0: off)
  c.data.flip = False        # random horizontal flips
  c.data.extra_path = ml_collections.config_dict.placeholder(str)  # .npz: images, labels
  c.data.extra_fraction = 0.0  # fraction of every batch drawn from the extra data

  c.model = ml_collections.ConfigDict()
  c.model.family = "wide_resnet"     # wide_resnet | cnn | mlp | resnet | preact_resnet
  c.model.depth = 10                 # WRN depth (6n + 4), ResNet depth (18 | 34) or MLP layers
  c.model.width = 1                  # the width multiplier k
  c.model.base_channels = 16         # channels (MLP: units) that k multiplies
  c.model.strides = (1, 2, 2)        # the CNN's three convolutions' strides
  c.model.cnn_head = "pool"          # the CNN's head: pool (global average) | flatten
  c.model.parameterization = "standard"   # standard | ntk
  c.model.dtype = "float32"          # compute dtype; parameters and BN stats stay float32

  # The threat model, shared by training and evaluation.
  c.attack = ml_collections.ConfigDict()
  c.attack.norm = "linf"     # linf | l2 | l1
  c.attack.eps = 0.031       # TRADES' 0.031; RobustBench uses 8/255 (0.0314) — not the same

  c.train = ml_collections.ConfigDict()
  c.train.method = "trades"          # standard | pgd_at | trades | mart
  # TRADES β = Eq. 1's λ (λ0 for the WAR rules); unset: the method's reference, 6 for trades
  # (TRADES' CIFAR setting) and mart (MART's), 1 for pgd_at (Madry) — see `beta(config)`.
  c.train.beta = ml_collections.config_dict.placeholder(float)
  c.train.stop_gradient_target = False   # reference: gradients flow through the clean target
  # pgd_at's regularizer: difference (Eq. 1: CE(x) + λ·(CE(x̂) − CE(x)); λ = 1 is Madry's
  # CE(x̂)) | clamped (the authors': CE(x) + λ·mean(max(CE(x̂), CE(x)) − CE(x))).
  c.train.pgd_at_form = "difference"
  # Batches folded into the BatchNorm running statistics, in order, from clean | adversarial;
  # empty: the method's reference — trades (clean, adversarial, clean), pgd_at difference
  # (adversarial,), pgd_at clamped (adversarial, clean), standard (clean,).
  c.train.batch_norm_updates = ()
  c.train.attack_steps = 10          # inner maximization (KL for trades, CE for pgd_at)
  c.train.attack_step_size = 0.007
  # normal (x + 0.001·N(0,1)) | uniform (in the ball) | none; unset: the method's reference,
  # normal for trades (TRADES), uniform for pgd_at (Madry).
  c.train.attack_init = ml_collections.config_dict.placeholder(str)
  c.train.epochs = 100
  c.train.batch_size = 128           # global batch, split over all devices: a multiple of
                                     # the device count
  c.train.lr = 0.1
  c.train.momentum = 0.9
  c.train.weight_decay = 2e-4
  c.train.schedule = "multistep"     # multistep | halving | cosine | constant
  # Epochs counted from 1, as in the reference code ("from epoch 75": after 74 full epochs).
  c.train.decay_epochs = (75, 90, 100)  # multistep: ×0.1 from each of these epochs (TRADES)
  c.train.halving_start = 75         # halving: ×0.5 from this epoch and every epoch after
  c.train.checkpoint_every_steps = 0  # extra mid-epoch checkpoints (0: at epoch ends only)
  # MART's λ is train.beta (its reference: 6, inner attack CE from x + 0.001·N(0,1), the
  # attack defaults above). AWP perturbs the weights with any method; its references: TRADES-AWP
  # γ 5e-3 from epoch 10, AT-AWP (pgd_at) γ 1e-2 from epoch 1.
  c.train.awp_gamma = 0.0            # AWP: ‖v_l‖ = γ·‖w_l‖ per weight tensor (0: off)
  c.train.awp_start_epoch = 10       # AWP from this epoch on (counted from 1)
  c.train.ema_decay = 0.0            # moving average of the weights, which are then the ones
                                     # evaluated and kept as best (0: off; e.g. 0.995)

  c.war = ml_collections.ConfigDict()
  c.war.rule = "fixed"               # fixed | static | adaptive (see robustwidth/war.py)
  c.war.reference_width = 1.0        # k0, the thin network λ0 was tuned on
  c.war.gamma = 0.0                  # static: λ = λ0 · (k / k0)^γ
  c.war.reference_ratio = 0.0        # adaptive: r0; 0 means "read it from reference_run"
  c.war.reference_run = ml_collections.config_dict.placeholder(str)  # thin run's workdir
  c.war.beta_max = 100.0             # adaptive: upper bound on λ
  c.war.ema_decay = 0.99             # adaptive: smoothing of the loss averages

  # Per-epoch evaluation on the whole test split: PGD with cross-entropy.
  c.eval = ml_collections.ConfigDict()
  c.eval.every_epochs = 1
  c.eval.batch_size = 500            # test examples per batch, padded to a multiple of
                                     # the device count (padding is masked out)
  c.eval.num_steps = 20
  c.eval.step_size = 0.003           # TRADES' 0.003; the authors used 0.007
  c.eval.init = "uniform"            # U(−ε, ε), the first gradient taken before clipping
  c.eval.restarts = 1
  # After training: AutoAttack (standard) on the best checkpoint, first N test points (0: off).
  c.eval.autoattack_examples = 0

  # width_study: the grid of runs (each run is this config with one grid point applied).
  c.sweep = ml_collections.ConfigDict()
  c.sweep.widths = (1,)
  c.sweep.betas = (6.0,)
  c.sweep.seeds = (0,)
  c.sweep.war_rules = ()             # WAR rows for each width > war.reference_width:
                                     # static and/or adaptive (the fixed rows always run)
  c.sweep.war_betas = ()             # β0 of the WAR rows (empty: every value of sweep.betas)

  # ntk_width (robustwidth/studies/ntk_width.py): the families measured at initialization and
  # trained (with config.train) then measured, under which parameterizations, and how.
  c.ntk_width = ml_collections.ConfigDict()
  c.ntk_width.families = ("mlp", "cnn", "wide_resnet")
  c.ntk_width.trained_families = ("mlp",)
  c.ntk_width.trained_methods = ("standard", "trades")  # each trained run's train.method
  c.ntk_width.parameterizations = ("standard", "ntk")
  c.ntk_width.trained_parameterizations = ("standard", "ntk")
  # The NTK parameterization's gradients are smaller by √fan-in, so it trains at a larger lr,
  # the same at every width (its NTK does not grow with width): at lr 0.05 the 16-unit MLP
  # reaches 43% training accuracy on digits in 10 epochs, at 0.5 90%, at 2.0 95%.
  c.ntk_width.ntk_lr = 1.0
  # Per family: widths (geometric), the channels/units width multiplies, and depth (MLP
  # hidden layers, WideResNet 6n + 4; the CNN has three conv layers and ignores it).
  for family, widths, base_channels, depth in (("mlp", (1, 4, 16, 64, 256), 16, 1),
                                               ("cnn", (1, 2, 4, 8), 4, 3),
                                               ("wide_resnet", (1, 2, 4), 2, 10)):
    c.ntk_width[family] = ml_collections.ConfigDict(
        {"widths": widths, "base_channels": base_channels, "depth": depth})
  c.ntk_width.init_seeds = 8           # seeds at initialization (>= 2: a spread over seeds)
  c.ntk_width.num_examples = 32        # test examples for gradient norms and the probe
  c.ntk_width.kernel_examples = 4      # test examples for the NTK ([4·10, 4·10] Gram matrix)
  c.ntk_width.top_eigenvalues = 3      # the NTK Gram matrix's largest eigenvalues recorded
  c.ntk_width.implementation = "jacobian_contraction"  # robustwidth.ntk.IMPLEMENTATIONS
  c.ntk_width.confidence = 0.95        # of the power-law slopes' confidence intervals
  c.ntk_width.timing_repeats = 3       # per NTK implementation and width (0: no timing)
  return c.lock()


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses "width=10,beta=6" (the part after `file.py:`) into values of the defaults' types.

  Values are Python literals (10, 6.0, (1, 2)); booleans also as true/false, any case. A value
  that is not of its default's type (1.5 for an int, "yes" for a bool) is an error, never
  silently converted. A default of None or str takes any text.
  """
  result = ml_collections.ConfigDict(defaults)
  if not arg:
    return result
  for item in arg.split(","):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ConfigError(f"Config argument {item!r} is not one of "
                        f"{sorted(defaults)} (write them as key=value,key=value).")
    result[key] = _typed(key, value, defaults[key])
  return result


def _typed(key: str, text: str, default):
  if default is None or isinstance(default, str):
    return text
  if isinstance(default, bool) and text.lower() in ("true", "false"):
    return text.lower() == "true"
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if type(value) is not type(default):
    raise ConfigError(f"Config argument {key}={text!r} is not a {type(default).__name__} "
                      f"like its default {default!r}.")
  return value


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
  """(key, saved value, current value) for each setting in which two runs' configurations
  (as JSON dicts) differ. The sweep section is left out: it is the grid a study's runs come
  from, not a setting of any one run, so a study extended by widths, β values, seeds or rules
  keeps its finished runs. A key the saved configuration lacks (added to `base()` after the run)
  counts only if its current value is not the default, which keeps the old behaviour."""
  defaults = json.loads(base().to_json())
  return _tree_differences({k: v for k, v in saved.items() if k != "sweep"},
                           {k: v for k, v in current.items() if k != "sweep"}, defaults)


_MISSING = object()


def _tree_differences(saved, current, defaults, prefix: str = ""):
  if isinstance(saved, dict) and isinstance(current, dict):
    out = []
    for key in sorted(set(saved) | set(current)):
      default = defaults.get(key, _MISSING) if isinstance(defaults, dict) else _MISSING
      value = saved.get(key, _MISSING)
      if value is _MISSING and default is not _MISSING:
        value = default
      out += _tree_differences(None if value is _MISSING else value, current.get(key),
                               default, f"{prefix}{key}.")
    return out
  return [] if saved == current else [(prefix.rstrip("."), saved, current)]


def describe_differences(differences, saved_name: str) -> str:
  """`differences` as "config.key: <saved_name> old, now new; ..."."""
  return "; ".join(f"config.{k}: {saved_name} {a!r}, now {b!r}" for k, a, b in differences)


def unknown_key_error(error: AttributeError | KeyError) -> ConfigError:
  """ml_collections' error for a key a locked configuration lacks, as one line: the key and
  ml_collections' "Did you mean" suggestion, without its listing of every other field."""
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError)
    error = error.args[0]
  first, *suggestion = str(error.args[0] if error.args else error).splitlines()
  key = first.split('"')[1] if first.startswith("Key ") else first.strip("'")
  return ConfigError(" ".join([f"{key!r} is not a configuration key.", *suggestion,
                               "(Every key and its default: robustwidth/config.py base().)"]))


def _fail(key: str, value, allowed: str) -> None:
  raise ConfigError(f"config.{key} = {value!r} is not allowed: {allowed}.")


def validate(config: ml_collections.ConfigDict, device_count: int = 1) -> None:
  """Raises ConfigError naming the first unknown key or invalid value."""
  try:  # A configuration not built on `base()`, e.g. read back from JSON, meets the lock here.
    base().update(config.to_dict())
  except (AttributeError, KeyError) as error:
    raise unknown_key_error(error) from None
  except TypeError as error:
    raise ConfigError(str(error)) from None
  known, given = _flatten(base()), _flatten(config)
  choices = {
      "job": JOBS, "data.name": data.DATASETS, "model.family": FAMILIES,
      "model.cnn_head": CNN_HEADS,
      "model.parameterization": PARAMETERIZATIONS, "model.dtype": DTYPES,
      "attack.norm": attacks.NORMS, "train.method": steps.METHODS,
      "train.attack_init": attacks.INITS, "train.schedule": optim.SCHEDULES,
      "war.rule": war.RULES, "eval.init": attacks.INITS,
  }
  if given["train.attack_init"] is None:
    del choices["train.attack_init"]  # Unset: the method's reference start.
  choices["train.pgd_at_form"] = losses.PGD_AT_FORMS
  for key, allowed in choices.items():
    if given.get(key, known[key]) not in allowed:
      _fail(key, given[key], f"use one of {allowed}")
  allowed = ("clean",) if config.train.method == "standard" else steps.BATCHES
  if not set(config.train.batch_norm_updates) <= set(allowed):
    _fail("train.batch_norm_updates", config.train.batch_norm_updates,
          f"name batches from {allowed} in the order they update the statistics, or leave it "
          "empty for the method's reference")
  epochs = tuple(config.train.decay_epochs) + (config.train.halving_start,)
  if not all(isinstance(e, int) and e >= 1 for e in epochs):
    _fail("train.decay_epochs / train.halving_start", epochs,
          "epochs are counted from 1: each must be an integer >= 1")
  if list(config.train.decay_epochs) != sorted(set(config.train.decay_epochs)):
    _fail("train.decay_epochs", config.train.decay_epochs, "list each epoch once, increasing")
  positive_ints = ("model.depth", "model.width", "model.base_channels", "train.attack_steps",
                   "train.epochs", "train.batch_size", "eval.every_epochs", "eval.batch_size",
                   "eval.num_steps", "eval.restarts", "train.awp_start_epoch")
  for key in positive_ints:
    if not isinstance(given[key], int) or given[key] < 1:
      _fail(key, given[key], "it must be an integer >= 1")
  for key, value in given.items():
    values = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
      _fail(key, value, "it must be finite")
  strides = tuple(config.model.strides)
  if len(strides) != 3 or not all(isinstance(s, int) and s >= 1 for s in strides):
    _fail("model.strides", config.model.strides,
          "the CNN's three convolutions each take an integer stride >= 1, e.g. (2, 2, 2)")
  if not isinstance(config.seed, int) or config.seed < 0:
    _fail("seed", config.seed, "it must be an integer >= 0")
  for key in ("data.train_examples", "eval.autoattack_examples"):
    if not isinstance(given[key], int) or given[key] < 0:
      _fail(key, given[key], "it must be an integer >= 0 (0: off)")
  if given["train.beta"] is not None and not given["train.beta"] >= 0:
    _fail("train.beta", given["train.beta"],
          "it must be >= 0 (or unset: the method's reference)")
  nonnegative = ("attack.eps", "train.attack_step_size", "train.lr",
                 "train.momentum", "train.weight_decay", "eval.step_size",
                 "train.checkpoint_every_steps", "data.crop_padding", "train.awp_gamma")
  for key in nonnegative:
    if not given[key] >= 0:
      _fail(key, given[key], "it must be >= 0")
  if not 0 <= config.train.ema_decay < 1:
    _fail("train.ema_decay", config.train.ema_decay, "it must lie in [0, 1) (0: no average)")
  if not 0 <= config.data.extra_fraction < 1:
    _fail("data.extra_fraction", config.data.extra_fraction, "it must lie in [0, 1)")
  if config.data.extra_fraction and not config.data.extra_path:
    _fail("data.extra_path", config.data.extra_path,
          "data.extra_fraction > 0 needs an .npz file of extra images and labels")
  if config.model.family == "wide_resnet" and (config.model.depth - 4) % 6:
    _fail("model.depth", config.model.depth,
          "a WideResNet depth is 6n + 4 (10, 16, 22, 28, 34, ...)")
  if config.model.family in ("resnet", "preact_resnet") and config.model.depth not in (18, 34):
    _fail("model.depth", config.model.depth, "a ResNet depth is 18 or 34")
  if config.train.batch_size % device_count:
    _fail("train.batch_size", config.train.batch_size,
          f"the global batch is split evenly over the {device_count} devices, so it must be "
          f"a multiple of {device_count}")
  if config.sweep.war_rules and not set(config.sweep.war_rules) <= {"static", "adaptive"}:
    _fail("sweep.war_rules", config.sweep.war_rules, "use rules from ('static', 'adaptive')")
  if not set(config.sweep.war_betas) <= set(config.sweep.betas):
    _fail("sweep.war_betas", config.sweep.war_betas,
          "each β0 needs its thin reference run: use values from sweep.betas")
  if config.sweep.war_rules and config.war.reference_width not in config.sweep.widths:
    _fail("war.reference_width", config.war.reference_width,
          f"the WAR rows need the thin reference run in the grid: use one of "
          f"sweep.widths {tuple(config.sweep.widths)}")
  for key in ("sweep.widths", "sweep.betas", "sweep.seeds"):
    if not given[key]:
      _fail(key, given[key], "it needs at least one value")
  grid = {"sweep.widths": (int, 1), "sweep.seeds": (int, 0), "sweep.betas": ((int, float), 0),
          "sweep.war_betas": ((int, float), 0)}
  for key, (kind, low) in grid.items():
    values = tuple(given[key])
    if any(isinstance(v, bool) or not isinstance(v, kind) or not v >= low for v in values):
      _fail(key, given[key], f"each value must be {'an integer' if kind is int else 'a number'}"
            f" >= {low}")
    if len(set(values)) != len(values):
      _fail(key, given[key], "each value may appear once (a repeated one would run twice)")
  if "ntk_width" in config:  # a run's own config may leave it out: its defaults are valid
    _validate_ntk_width(config.ntk_width)
  adaptive_from_run = (config.war.rule == "adaptive" and config.war.reference_ratio == 0
                       and config.war.reference_run)
  from robustwidth import experiment  # It builds objects from configs, so it imports this.
  try:  # A ratio still to be read from the reference run is checked when it is read.
    experiment.war_rule(config, reference_ratio=1.0 if adaptive_from_run else None)
  except ValueError as error:
    raise ConfigError(f"config.war: {error}") from None


def _validate_ntk_width(study: ml_collections.ConfigDict) -> None:
  """The NTK width study's settings (config.ntk_width)."""
  for key in ("families", "trained_families"):
    if not set(study[key]) <= set(NTK_FAMILIES):
      _fail(f"ntk_width.{key}", study[key], f"use families of {NTK_FAMILIES}")
  for family in set(study.families) | set(study.trained_families):
    widths = tuple(study[family].widths)
    if len(set(widths)) < 2 or min(widths) < 1:
      _fail(f"ntk_width.{family}.widths", widths,
            "a slope needs two or more distinct widths >= 1")
  if study.init_seeds < 2 and len(study.families):
    _fail("ntk_width.init_seeds", study.init_seeds, "a spread over seeds needs >= 2")
  for key in ("parameterizations", "trained_parameterizations"):
    if not set(study[key]) <= set(PARAMETERIZATIONS):
      _fail(f"ntk_width.{key}", study[key], f"use values of {PARAMETERIZATIONS}")
  if not set(study.trained_methods) <= set(steps.METHODS):
    _fail("ntk_width.trained_methods", study.trained_methods, f"use methods of {steps.METHODS}")
  if study.implementation not in ntk.IMPLEMENTATIONS:
    _fail("ntk_width.implementation", study.implementation, f"use one of {ntk.IMPLEMENTATIONS}")


def eval_padded_batch(config: ml_collections.ConfigDict, device_count: int) -> int:
  """The evaluation batch padded up to a multiple of the device count."""
  return -(-config.eval.batch_size // device_count) * device_count


def beta(config: ml_collections.ConfigDict) -> float:
  """λ (TRADES β): config.train.beta, or the method's reference value when it is unset."""
  if config.train.beta is None:
    return steps.reference_beta(config.train.method)
  return config.train.beta


def attack_init(config: ml_collections.ConfigDict) -> str:
  """The training attack's start: config.train.attack_init, or the method's reference."""
  if config.train.attack_init is None:
    return steps.reference_attack_init(config.train.method)
  return config.train.attack_init
