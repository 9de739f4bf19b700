"""One TRADES run on CIFAR-10 or CIFAR-100 with WRN-34-k, as the TRADES reference code
(yaodongyu/TRADES) trains it (configs/common.py `trades`).

  python -m launch.main --config configs/trades.py:width=10,beta=6 --workdir runs/x
  python -m launch.main --config configs/trades.py:dataset=cifar100,width=10 --workdir runs/y
"""
from configs import common
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset="cifar10", width=10, beta=6.0, epochs=100,
                              schedule="multistep")
  return common.trades(args.dataset, width=args.width, beta=args.beta, epochs=args.epochs,
                       schedule=args.schedule)
