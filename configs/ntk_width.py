"""The NTK width study (robustwidth/studies/ntk_width.py) on the embedded digits or on
Fashion-MNIST (`:dataset=fashion_mnist`).

Input-gradient norms, the authors' local-Lipschitz probe and the empirical NTK against width,
at initialization over `init_seeds` seeds and after a short standard and a short TRADES training
per width, under standard and NTK parameterization. The MLP is the NTK theory's two-layer net:
one hidden ReLU layer of 16·k units, k = 1 ... 256 (16 to 4,096 units). On digits the CNN and
WideResNet families are measured at initialization too; `:full=True` also trains the CNN family
and adds WideResNet width 8. Fashion-MNIST measures the MLP only, trains on its first 2,000
images (the whole 10,000-image test set evaluates each run) and forms the NTK of 2 examples and
4 seeds, which keeps the 4,096-unit Jacobians (3.2M parameters) at about 1 GiB. `:quick=True`
is a seconds-long smoke run on digits.

  python -m launch.main --config configs/ntk_width.py --workdir runs/ntk_width
  python -m launch.main --config configs/ntk_width.py:dataset=fashion_mnist \
      --workdir runs/ntk_width_fashion
"""
from robustwidth import config as config_lib


DATASETS = ("digits", "fashion_mnist")


def get_config(arg=None):
  args = config_lib.parse_arg(arg, quick=False, full=False, seeds=0, dataset="digits")
  if args.dataset not in DATASETS:
    raise config_lib.ConfigError(f"ntk_width dataset={args.dataset!r}: use one of {DATASETS}.")
  c = config_lib.base()
  c.job = "ntk_width"
  c.data.name = args.dataset
  c.attack.eps = 0.1                 # images in [0, 1]; the probe's and TRADES' ℓ∞ ball
  c.train.attack_steps = 10          # the probe and TRADES' inner maximization: 10 steps
  c.train.attack_step_size = 0.025   # of ε/4 (2.5ε in all, as TRADES' 10 of 0.007 at 0.031)
  # After training with each of study.trained_methods (TRADES at its reference β = 6),
  # measured at the best checkpoint.
  c.train.epochs = 10
  c.train.batch_size = 64
  c.train.lr = 0.05
  c.train.schedule = "constant"
  c.eval.every_epochs = c.train.epochs
  c.eval.num_steps = 5
  c.eval.step_size = 0.025
  c.eval.batch_size = 360

  study = c.ntk_width
  if args.seeds:
    study.init_seeds = args.seeds
  if args.dataset == "fashion_mnist":
    c.data.train_examples = 2000
    c.train.epochs = 5
    c.eval.every_epochs = c.train.epochs
    c.eval.batch_size = 500
    study.families = ("mlp",)
    study.init_seeds = args.seeds or 4
    study.kernel_examples = 2
    study.timing_repeats = 0
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
