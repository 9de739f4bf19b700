"""The paper's state-of-the-art setting: WRN-34-15 with WAR, trained with additional
pseudo-labelled data mixed into every batch and a cosine schedule, evaluated at RobustBench's
ε = 8/255 (RobustBench `Wu2020Do`: 87.67 clean, 60.65 AutoAttack).

The extra data is yours to supply: an .npz with `images` [N, 32, 32, 3] uint8 and `labels` [N]
(e.g. the 500K pseudo-labelled TinyImages of Carmon et al. 2019). Settings the paper notes do
not pin down (mixing fraction, epochs, β rule) are this file's choices, all overridable:

  python -m launch.main --config configs/cifar10_war_extra.py:extra=/data/pseudo.npz \
      --workdir runs/war_extra
"""
from configs import common
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, extra="", fraction=0.5, width=15, epochs=200)
  c = common.trades("cifar10", width=args.width, beta=6.0, epochs=args.epochs,
                    schedule="cosine")
  c.attack.eps = 8 / 255
  c.train.attack_step_size = 2 / 255
  c.eval.step_size = 2 / 255
  c.data.extra_path = args.extra or None
  c.data.extra_fraction = args.fraction
  c.war.rule = "static"       # λ = 6 · (15 / 1)^0.5 ≈ 23
  c.war.reference_width = 1.0
  c.war.gamma = 0.5
  return c
