"""The CIFAR protocols (docs/paper.md §5), shared by the CIFAR configs: TRADES' reference code
(yaodongyu/TRADES) and the authors' (tabrisweapon/A-temp-project)."""
from robustwidth import config as config_lib

DATASETS = ("cifar10", "cifar100")


def _cifar(dataset: str, width: int):
  """WRN-34-`width` on CIFAR: ℓ∞ ε 0.031, crop 4 + flip, SGD 0.1, momentum 0.9, weight decay
  2e-4, 10 inner steps of 0.007 from x + 0.001·N(0, 1), the lr schedules' epochs (75, 90, 100
  or halving from 75), PGD-20 (uniform start) on the whole test set every epoch, the best
  checkpoint by robust accuracy."""
  if dataset not in DATASETS:
    raise config_lib.ConfigError(f"dataset={dataset!r} is not one of {DATASETS}.")
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
  c.train.attack_steps = 10
  c.train.attack_step_size = 0.007
  c.train.attack_init = "normal"
  c.train.lr = 0.1
  c.train.momentum = 0.9
  c.train.weight_decay = 2e-4
  c.train.decay_epochs = (75, 90, 100)
  c.train.halving_start = 75
  c.eval.every_epochs = 1
  c.eval.batch_size = 500
  c.eval.num_steps = 20
  c.eval.init = "uniform"
  return c


def trades(dataset: str, *, width: int, beta: float, epochs: int, schedule: str):
  """TRADES as yaodongyu/TRADES trains it: the KL attack from x + 0.001·N(0, 1), BatchNorm
  statistics moved by the clean, adversarial and clean passes, batch 128; schedule multistep
  (×0.1 from epoch 75, ×0.01 from 90, ×0.001 from 100) or halving (every epoch from 75);
  PGD-20 evaluation with step 0.003."""
  c = _cifar(dataset, width)
  c.train.method = "trades"
  c.train.beta = beta
  c.train.batch_norm_updates = ("clean", "adversarial", "clean")
  c.train.epochs = epochs
  c.train.batch_size = 128
  c.train.schedule = schedule
  c.eval.step_size = 0.003
  return c


def authors(dataset: str, *, width: int, method: str, beta: float | None, epochs: int,
            schedule: str):
  """The authors' train_cifar10.py defaults: batch 64, both methods' attacks from
  x + 0.001·N(0, 1), PGD-20 evaluation with step 0.007, 100 epochs, the lr halved every epoch
  from epoch 75 (schedule halving) or ×0.1 from 75, 90 and 100 (multistep, their
  --no-early-stop). method trades: their TRADES loss, which reuses the clean logits inside the
  KL, so BatchNorm moves with the clean then the adversarial batch; λ 6 unless given (their
  README's WRN-34-10 result uses 18). method pgd_at: their clamped regularizer
  CE(x) + λ·mean(max(CE(x̂), CE(x)) − CE(x)), BatchNorm moved by the adversarial then the clean
  batch; λ 2 unless given (their README's Table 6 command)."""
  if method not in ("trades", "pgd_at"):
    raise config_lib.ConfigError(f"method={method!r}: the authors' code trains trades or "
                                 "pgd_at.")
  c = _cifar(dataset, width)
  c.train.method = method
  c.train.beta = float(beta) if beta is not None else {"trades": 6.0, "pgd_at": 2.0}[method]
  if method == "trades":
    c.train.batch_norm_updates = ("clean", "adversarial")
  else:
    c.train.pgd_at_form = "clamped"
    c.train.batch_norm_updates = ("adversarial", "clean")
  c.train.epochs = epochs
  c.train.batch_size = 64
  c.train.schedule = schedule
  c.eval.step_size = 0.007
  return c


def width_study(dataset: str, *, epochs: int, schedule: str):
  """WRN-34-{1, 5, 10, 15, 20} × β ∈ {6, 9, 12, 18, 24} under `trades`, plus WAR rows from the
  thin reference (k0 = 1, β0 = 6): static λ = 6·k^0.5 (λ(10) ≈ 19, near the authors' 18 for
  WRN-34-10) and adaptive."""
  c = trades(dataset, width=1, beta=6.0, epochs=epochs, schedule=schedule)
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
