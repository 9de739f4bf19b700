"""The main job: the paper's question on Fashion-MNIST, in minutes on two CPU cores. TRADES at
a fixed β (6) across one-hidden-layer MLP widths against Width Adjusted Regularization (static
rule λ = β·k^0.5 from the thinnest net), over three seeds (`epochs=`, `beta=` and `seeds=`
change these).

The MLP protocol of the Fashion-MNIST width study (configs/fashion_width_study.py: the first
5,000 training images, 15 epochs, ℓ∞ ε = 0.1, PGD-20 on all 10,000 test images) without
AutoAttack, at 64·k hidden units for k ∈ {1, 4, 16}: from the study's narrowest net, near the
training accuracy of the wider ones (the report's training-accuracy table shows how near), to
16× wider. The whole test set keeps one run's binomial error on stability under half a point,
so the report can tell a width effect from the spread over seeds.
"""
from configs import fashion_width_study
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, epochs=15, beta=6.0, seeds=3)
  c = fashion_width_study.get_config("family=mlp,autoattack=0")
  c.train.epochs = c.eval.every_epochs = args.epochs
  c.sweep.widths = (1, 4, 16)
  c.sweep.betas = (args.beta,)
  c.sweep.war_betas = (args.beta,)
  c.sweep.seeds = tuple(range(args.seeds))
  c.sweep.war_rules = ("static",)
  return c
