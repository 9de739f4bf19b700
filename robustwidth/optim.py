"""SGD with momentum and coupled weight decay, the paper's learning-rate schedules (optax), and
an exponential moving average of the weights.

Coupled weight decay as in PyTorch's SGD: the decay term wd·θ is added to the gradient before
momentum, on every parameter (BatchNorm and biases included, as in the reference code).
"""
import jax.numpy as jnp
import optax

SCHEDULES = ("multistep", "halving", "cosine", "constant")


def learning_rate_schedule(name: str, *, base_lr: float, steps_per_epoch: int, epochs: int,
                           decay_epochs=(75, 90, 100), halving_start: int = 75
                           ) -> optax.Schedule:
  """Per-step learning rate. Epochs are counted from 1, as in the reference code: "from epoch
  e" means from the first step of epoch e, after e − 1 full epochs.

  multistep: ×0.1 from each of `decay_epochs` on (TRADES: 75, 90, 100, so ×0.1 after 74 full
  epochs, ×0.01 after 89, ×0.001 after 99);
  halving: ×0.5 from epoch `halving_start` on and again at every later epoch (the authors'
  default: 0.05 in epoch 75, 0.025 in epoch 76, ...);
  cosine: cosine decay to 0 over the run; constant: `base_lr` throughout.
  """
  if name == "multistep":
    return optax.piecewise_constant_schedule(
        base_lr, {int((e - 1) * steps_per_epoch): 0.1 for e in decay_epochs})
  if name == "halving":
    return optax.piecewise_constant_schedule(
        base_lr, {(e - 1) * steps_per_epoch: 0.5 for e in range(halving_start, epochs + 1)})
  if name == "cosine":
    return optax.cosine_decay_schedule(base_lr, decay_steps=max(epochs * steps_per_epoch, 1))
  if name == "constant":
    return optax.constant_schedule(base_lr)
  raise ValueError(f"Unknown learning-rate schedule {name!r}; use one of {SCHEDULES}.")


def sgd(schedule: optax.Schedule, *, momentum: float, weight_decay: float
        ) -> optax.GradientTransformation:
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(schedule, momentum=momentum))


def ema_decay_at(decay: float, step):
  """The weight average's decay at its update after `step` optimizer steps (0 at the first):
  min(decay, (1 + t) / (10 + t)), the usual warm-up, so that the early average soon forgets
  the initialization."""
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1 + t) / (10 + t))


def update_ema(ema_params, params, decay: float, step):
  """One step of the exponential moving average of the weights (decay by `ema_decay_at`)."""
  if ema_params is None:
    raise ValueError("There is no weight average to update: start from a train state that "
                     "keeps one (steps.init_train_state(..., ema=True)).")
  return optax.incremental_update(params, ema_params, 1 - ema_decay_at(decay, step))
