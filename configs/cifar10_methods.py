"""MART, TRADES-AWP or AT-AWP on CIFAR10 with WRN-34-k, each with its reference's protocol.

  python -m launch.main --config configs/cifar10_methods.py:method=mart,width=10 --workdir runs/x

mart: YisenWang/MART train_wideresnet.py (λ 6, ε 0.031, 10 CE steps of 0.007 from
  x + 0.001·N(0, 1), weight decay 7e-4, 90 epochs, lr ×0.1 at 75; PGD-20 of step ε/10).
trades_awp: csdongxian/AWP trades_AWP (β 6, ε 8/255, 10 KL steps of 2/255, weight decay 5e-4,
  200 epochs, lr ×0.1 at 100 and 150, AWP γ 5e-3 from epoch 10).
at_awp: csdongxian/AWP AT_AWP (Madry's CE on x̂ from a uniform start, otherwise as
  trades_awp, AWP γ 1e-2 from epoch 1; PGD-20 of step 2/255).
Everything else is the TRADES protocol of configs/common.py.
"""
from configs import common
from robustwidth import config as config_lib

METHODS = ("mart", "trades_awp", "at_awp")


def get_config(arg=None):
  args = config_lib.parse_arg(arg, method="mart", width=10)
  if args.method not in METHODS:
    raise config_lib.ConfigError(f"method={args.method!r} is not one of {METHODS}.")
  c = common.trades("cifar10", width=args.width, beta=6.0, epochs=200, schedule="multistep")
  if args.method == "mart":
    c.train.method = "mart"
    c.train.epochs = 90
    c.train.weight_decay = 7e-4
    c.train.decay_epochs = (75, 90)
    c.eval.step_size = 0.0031
    return c
  c.attack.eps = 8 / 255
  c.train.attack_step_size = 2 / 255
  c.train.weight_decay = 5e-4
  c.train.decay_epochs = (100, 150)
  c.eval.step_size = 2 / 255
  if args.method == "trades_awp":
    c.train.awp_gamma = 5e-3
    c.train.awp_start_epoch = 10
  else:
    c.train.method = "pgd_at"
    c.train.beta = 1.0
    c.train.attack_init = "uniform"
    c.train.awp_gamma = 1e-2
    c.train.awp_start_epoch = 1
  return c
