"""The width study on Fashion-MNIST (draft for timing)."""
from robustwidth import config as config_lib

FAMILIES = {  # family: (depth, base units/channels, widths)
    "mlp": (1, 64, (1, 4, 32)),
    "cnn": (3, 8, (1, 2, 8)),
}


def get_config(arg=None):
  args = config_lib.parse_arg(arg, family="mlp")
  if args.family not in FAMILIES:
    raise config_lib.ConfigError(f"fashion_width_study family={args.family!r}: use one of "
                                 f"{tuple(FAMILIES)}.")
  depth, base, widths = FAMILIES[args.family]
  c = config_lib.base()
  c.job = "width_study"
  c.data.name = "fashion_mnist"
  c.data.train_examples = 5000
  c.model.family = args.family
  c.model.depth = depth
  c.model.base_channels = base
  c.attack.norm = "linf"
  c.attack.eps = 0.1
  c.train.method = "trades"
  c.train.attack_steps = 5
  c.train.attack_step_size = 0.04
  c.train.epochs = 20
  c.train.batch_size = 128
  c.train.lr = 0.05
  c.train.weight_decay = 5e-4
  c.train.schedule = "cosine"
  c.eval.every_epochs = c.train.epochs
  c.eval.batch_size = 500
  c.eval.num_steps = 20
  c.eval.step_size = 0.01
  c.eval.autoattack_examples = 1000
  c.sweep.widths = widths
  c.sweep.betas = (3.0, 6.0, 12.0)
  c.sweep.seeds = (0, 1, 2)
  c.sweep.war_rules = ("static", "adaptive")
  c.sweep.war_betas = (6.0,)
  c.war.reference_width = 1.0
  c.war.gamma = 0.5
  c.war.beta_max = 48.0
  return c
