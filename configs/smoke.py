"""A seconds-long TRADES run on the digits data, for tests and a first look at the tools."""
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, width=1, epochs=2)
  c = config_lib.base()
  c.model.family = "wide_resnet"
  c.model.depth = 10
  c.model.width = args.width
  c.model.base_channels = 2
  c.attack.eps = 0.1
  c.train.attack_steps = 3
  c.train.attack_step_size = 0.04
  c.train.epochs = args.epochs
  c.train.batch_size = 64
  c.train.lr = 0.05
  c.train.schedule = "constant"
  c.eval.num_steps = 3
  c.eval.step_size = 0.04
  c.eval.batch_size = 200
  return c
