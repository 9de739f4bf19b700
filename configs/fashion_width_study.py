r"""The width study on Fashion-MNIST: TRADES at ℓ∞ ε = 0.1 across widths, a β grid at every
width, and the static and adaptive WAR rows from the thinnest net, for one model family per
study directory (run names hold width, β, seed and rule, not the family):

  python -m launch.main --config configs/fashion_width_study.py:family=mlp \
      --workdir docs/results/fashion_mnist/mlp
  python -m launch.main --config configs/fashion_width_study.py:family=cnn \
      --workdir docs/results/fashion_mnist/cnn

Finished runs are reused, so either command can be stopped and started again, or split over
machines with launch.sweep --print_commands. Estimate first with launch.sweep --dry_run.

Families (`family=`):
  mlp  one hidden ReLU layer (the two-layer net of the NTK results) of 64·k units,
       k ∈ {1, 4, 32}: 64 to 2,048 units (32×). One layer, not two: a second 2,048-unit layer
       would multiply the widest run's cost by 3.5 (2,048² against 784·2,048 weights).
  cnn  three 3×3 conv layers of 4k, 8k, 16k channels, k ∈ {1, 2, 8} (8×), each of stride 2
       (28 → 14 → 7 → 4), and a linear head on the flattened 4×4 feature map. Stride 2 from
       the first layer makes the convolutions 3.5× cheaper than strides (1, 2, 2); the
       flattened head lets 4 channels reach the training accuracy that global pooling needs
       16 for (TRADES β = 6, seed 0: 76.4% at 4 channels flattened; pooled 70.8% at 4 and
       76.4% at 16), so the family starts at a width that fits; 2 channels do not train.
Protocol: the first `data.train_examples` = 5,000 training images (a small set, so that
15 epochs reach the training-accuracy plateau within the budget; the report's training-accuracy
table shows whether they did); TRADES with 5 inner steps of 0.04 (2ε in all, as TRADES' 10 of
0.007 at ε 0.031) from x + 0.001·N(0, 1); SGD 0.05, momentum 0.9, weight decay 5e-4, cosine
schedule, batch 128; β ∈ {3, 6, 12}; WAR from k0 = 1, β0 = 6: static λ = 6·k^0.5 and adaptive
(λ ≤ 48); seeds 0, 1, 2. Evaluation once, after the last epoch (so the best checkpoint is the
last): PGD-20 (step 0.01, uniform start) on all 10,000 test images, then AutoAttack standard on
the first `autoattack` (default 1,000) test images in the official order.

Cost (docs/benchmarks.md has the timings): AutoAttack dominates, most of all at the widest
widths. `autoattack=0` leaves it out and `autoattack=N` runs it on the first N test images.
"""
from robustwidth import config as config_lib

FAMILIES = {  # family: (depth, base units or channels, widths)
    "mlp": (1, 64, (1, 4, 32)),
    "cnn": (3, 4, (1, 2, 8)),
}


def get_config(arg=None):
  args = config_lib.parse_arg(arg, family="mlp", autoattack=1000)
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
  if args.family == "cnn":
    c.model.strides = (2, 2, 2)
    c.model.cnn_head = "flatten"
  c.attack.norm = "linf"
  c.attack.eps = 0.1
  c.train.method = "trades"
  c.train.attack_steps = 5
  c.train.attack_step_size = 0.04
  c.train.attack_init = "normal"
  c.train.epochs = 15
  c.train.batch_size = 128
  c.train.lr = 0.05
  c.train.momentum = 0.9
  c.train.weight_decay = 5e-4
  c.train.schedule = "cosine"
  c.eval.every_epochs = c.train.epochs
  c.eval.batch_size = 500
  c.eval.num_steps = 20
  c.eval.step_size = 0.01
  c.eval.init = "uniform"
  c.eval.autoattack_examples = args.autoattack
  c.sweep.widths = widths
  c.sweep.betas = (3.0, 6.0, 12.0)
  c.sweep.seeds = (0, 1, 2)
  c.sweep.war_rules = ("static", "adaptive")
  c.sweep.war_betas = (6.0,)
  c.war.reference_width = 1.0
  c.war.gamma = 0.5
  c.war.beta_max = 48.0
  return c
