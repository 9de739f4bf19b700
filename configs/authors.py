"""One run of the paper authors' protocol on CIFAR-10 or CIFAR-100 with WRN-34-k, as their code
(tabrisweapon/A-temp-project, train_cifar10.py) trains it (configs/common.py `authors`):
TRADES or their clamped PGD-AT, batch 64, the lr halved every epoch from epoch 75.

  python -m launch.main --config configs/authors.py:width=10,beta=18 --workdir runs/x
  python -m launch.main --config configs/authors.py:method=pgd_at,width=10 --workdir runs/y
"""
from configs import common
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset="cifar10", width=10, method="trades", beta=None,
                              epochs=100, schedule="halving")
  return common.authors(args.dataset, width=args.width, method=args.method, beta=args.beta,
                        epochs=args.epochs, schedule=args.schedule)
