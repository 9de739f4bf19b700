"""The paper's width study on CIFAR10: WRN-34-{1, 5, 10, 15, 20} × β ∈ {6, 9, 12, 18, 24}, plus
static and adaptive WAR rows (configs/common.py). Estimate its cost first:

  python -m launch.sweep --config configs/cifar10_width_study.py --workdir runs/cifar10 --dry_run
"""
from configs import common


def get_config(arg=None):
  return common.cifar_width_study("cifar10", arg)
