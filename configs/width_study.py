"""The paper's width study on CIFAR-10 or CIFAR-100: WRN-34-{1, 5, 10, 15, 20} × β ∈ {6, 9, 12,
18, 24} under the TRADES protocol, plus static and adaptive WAR rows (configs/common.py).
Estimate its cost first:

  python -m launch.sweep --config configs/width_study.py --workdir runs/cifar10 --dry_run
  python -m launch.sweep --config configs/width_study.py:dataset=cifar100 --workdir runs/c100 \
      --dry_run
"""
from configs import common
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset="cifar10", epochs=100, schedule="multistep")
  return common.width_study(args.dataset, epochs=args.epochs, schedule=args.schedule)
