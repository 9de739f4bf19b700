"""The paper's CIFAR protocol (PAPER.md §5), shared by the CIFAR configs."""
from robustwidth import config as config_lib


def cifar_trades(dataset: str, *, width: int, beta: float, epochs: int, schedule: str):
  """TRADES on WRN-34-`width`: ℓ∞ ε 0.031, 10 inner steps of 0.007 from x + 0.001·N(0, 1);
  SGD 0.1, momentum 0.9, weight decay 2e-4, batch 128, crop 4 + flip; PGD-20 (step 0.003,
  uniform start) on the whole test set every epoch; the best checkpoint by robust accuracy.
  schedule: multistep (×0.1 at 75, ×0.01 at 90) or halving (every epoch from 75)."""
  c = config_lib.base()
  c.data.name = dataset
  c.data.crop_padding = 4
  c.data.flip = True
  c.model.family = "wide_resnet"
  c.model.depth = 34
  c.model.width = width
  c.model.base_channels = 16
  c.attack.norm = "linf"
  c.attack.eps = 0.031
  c.train.method = "trades"
  c.train.beta = beta
  c.train.attack_steps = 10
  c.train.attack_step_size = 0.007
  c.train.attack_init = "normal"
  c.train.epochs = epochs
  c.train.batch_size = 128
  c.train.lr = 0.1
  c.train.momentum = 0.9
  c.train.weight_decay = 2e-4
  c.train.schedule = schedule
  c.train.decay_epochs = (75, 90)
  c.train.halving_start = 75
  c.eval.every_epochs = 1
  c.eval.batch_size = 500
  c.eval.num_steps = 20
  c.eval.step_size = 0.003
  c.eval.init = "uniform"
  return c


def cifar_width_study(dataset: str, arg):
  """WRN-34-{1, 5, 10, 15, 20} × β ∈ {6, 9, 12, 18, 24} under TRADES, plus WAR rows from the
  thin reference (k0 = 1, β0 = 6): static λ = 6·k^0.5 (λ(10) ≈ 19, near the authors' 18 for
  WRN-34-10) and adaptive."""
  args = config_lib.parse_arg(arg, epochs=100, schedule="multistep")
  c = cifar_trades(dataset, width=1, beta=6.0, epochs=args.epochs, schedule=args.schedule)
  c.job = "width_study"
  c.sweep.widths = (1, 5, 10, 15, 20)
  c.sweep.betas = (6.0, 9.0, 12.0, 18.0, 24.0)
  c.sweep.seeds = (0,)
  c.sweep.war_rules = ("static", "adaptive")
  c.sweep.war_betas = (6.0,)
  c.war.reference_width = 1.0
  c.war.gamma = 0.5
  c.war.beta_max = 48.0
  return c
