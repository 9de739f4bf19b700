"""The main job: the paper's question on the embedded digits data. TRADES at a fixed β across
WideResNet widths against Width Adjusted Regularization (static rule λ = β·(k/1)^0.5 from the
thinnest net), over two seeds.

A WRN-10 family whose stage channels are [c·k, 2c·k, 4c·k] with c = 1 (the paper's family has
c = 16; this keeps width 16 within seconds per epoch on two CPU cores). Reports natural
accuracy, robust accuracy, perturbation stability and the local-Lipschitz probe per width and
rule, with the spread over seeds and a verdict.
"""
from robustwidth import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, epochs=15, beta=6.0, seeds=2)
  c = config_lib.base()
  c.job = "width_study"
  c.data.name = "digits"
  c.model.family = "wide_resnet"
  c.model.depth = 10
  c.model.base_channels = 1
  c.attack.norm = "linf"
  c.attack.eps = 0.1
  c.train.method = "trades"
  c.train.beta = args.beta
  c.train.attack_steps = 5          # the paper's 10 would double the job's time on 2 cores
  c.train.attack_step_size = 0.03
  c.train.epochs = args.epochs
  c.train.batch_size = 128
  c.train.lr = 0.1
  c.train.schedule = "cosine"
  c.eval.every_epochs = 5
  c.eval.num_steps = 20
  c.eval.step_size = 0.01
  c.eval.batch_size = 360
  c.sweep.widths = (1, 2, 4, 8, 16)
  c.sweep.betas = (args.beta,)
  c.sweep.seeds = tuple(range(args.seeds))
  c.sweep.war_rules = ("static",)
  c.war.reference_width = 1.0
  c.war.gamma = 0.5
  return c
