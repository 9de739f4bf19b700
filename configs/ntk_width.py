"""The NTK width study (robustwidth/studies/ntk_width.py) on the embedded digits data.

Input-gradient norms, the authors' local-Lipschitz probe and the empirical NTK against width,
for the MLP, CNN and WideResNet families, at initialization over `init_seeds` seeds and after
a short standard training per width, under standard and NTK parameterization. The default
trains the MLP family only; `:full=True` also trains the CNN family and adds WideResNet width
8; `:quick=True` is a seconds-long smoke run.

  python -m launch.main --config configs/ntk_width.py --workdir runs/ntk_width
"""
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, quick=False, full=False, seeds=8)
  c = config_lib.base()
  c.job = "ntk_width"
  c.data.name = "digits"
  c.attack.eps = 0.1                 # digits are 8×8 in [0, 1]; the probe's ℓ∞ ball
  c.train.attack_steps = 10          # the probe: TRADES' 10 inner steps
  c.train.attack_step_size = 0.025
  # After training: standard training, measured at its best checkpoint.
  c.train.method = "standard"
  c.train.epochs = 10
  c.train.batch_size = 64
  c.train.lr = 0.05
  c.train.schedule = "constant"
  c.eval.every_epochs = c.train.epochs
  c.eval.num_steps = 5
  c.eval.step_size = 0.025
  c.eval.batch_size = 360

  study = c.ntk_width
  study.init_seeds = args.seeds
  if args.full:
    study.trained_families = ("mlp", "cnn")
    study.wide_resnet.widths = (1, 2, 4, 8)
  if args.quick:
    study.families = ("mlp",)
    study.trained_families = ("mlp",)
    study.mlp.update(widths=(1, 2, 4), base_channels=8, depth=1)
    study.init_seeds = 2
    study.num_examples = 8
    study.kernel_examples = 4
    study.timing_repeats = 1
    c.train.attack_steps = 2
    c.train.epochs = 1
    c.eval.every_epochs = 1
    c.eval.num_steps = 1
  return c
