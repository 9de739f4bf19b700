"""One TRADES run on CIFAR10 with WRN-34-k, the paper's protocol (configs/common.py).

  python -m launch.main --config configs/cifar10_trades.py:width=10,beta=6 --workdir runs/x
"""
from configs import common
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, width=10, beta=6.0, epochs=100, schedule="multistep")
  return common.cifar_trades("cifar10", width=args.width, beta=args.beta, epochs=args.epochs,
                             schedule=args.schedule)
