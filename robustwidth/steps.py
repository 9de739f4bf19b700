"""Pure, jit-able training and evaluation steps for standard, PGD-AT and TRADES training.

BatchNorm runs in evaluation mode inside the attack (the attack sees `logits_fn`) and in
training mode for the loss, where the clean and adversarial passes each normalize with their own
batch statistics and each update the running statistics, as two separate calls do in the
PyTorch reference. Every step's randomness comes from fold_in(state.key, state.step), so a
resumed run draws exactly the keys an uninterrupted one would.
"""
import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from robustwidth import attacks, awp, losses, metrics, optim, war
from robustwidth.data.augment import random_crop_flip
from robustwidth.models.functional import apply, logits_fn

METHODS = ("standard", "pgd_at", "trades", "mart")


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar: optimizer steps taken
  params: nnx.State
  model_state: nnx.State     # BatchNorm running statistics
  opt_state: optax.OptState
  key: jax.Array             # raw uint32 PRNG key the step keys are folded from
  war: war.WarState          # the current λ (TRADES β) and its running statistics
  ema_params: nnx.State | None = None  # moving average of params (None: not kept)


def init_train_state(params, model_state, optimizer, seed: int, rule: war.Rule,
                     ema: bool = False) -> TrainState:
  """`ema`: keep a moving average of the weights, starting from `params` (a copy: a donated
  state must not alias buffers)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                    opt_state=optimizer.init(params), key=jax.random.PRNGKey(seed),
                    war=rule.init(),
                    ema_params=jax.tree.map(jnp.copy, params) if ema else None)


def evaluated_params(state: TrainState) -> nnx.State:
  """The weights a run evaluates and keeps the best of: the moving average if it keeps one."""
  return state.params if state.ema_params is None else state.ema_params


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """Static PGD settings, passed as keyword arguments to `attacks.pgd`."""
  eps: float
  step_size: float
  num_steps: int
  norm: str = "linf"
  loss: str = "ce"
  init: str = "uniform"
  restarts: int = 1

  def kwargs(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  method: str                     # one of METHODS
  attack: AttackSettings | None   # the inner maximization (None for standard training)
  rule: war.Rule = war.Rule()     # λ (β) rule for trades and pgd_at
  stop_gradient_target: bool = False
  crop_padding: int = 0
  flip: bool = False
  awp_gamma: float = 0.0          # AWP's relative weight perturbation γ (0: no AWP)
  awp_start_step: int = 0         # AWP from this optimizer step on
  ema_decay: float = 0.0          # decay of the weights' moving average (0: none kept)

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"Unknown training method {self.method!r}; use one of {METHODS}.")
    if self.method != "standard" and self.attack is None:
      raise ValueError(f"Training method {self.method!r} needs attack settings.")


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    settings: TrainSettings) -> Callable:
  """Returns step(state, batch) -> (state, metrics); batch = {"image", "label"}. metrics
  holds scalars plus "finite": whether the logits, loss and updated parameters are finite."""

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(state.key, state.step)
    augment_key, attack_key = jax.random.split(key)
    x = random_crop_flip(augment_key, batch["image"], crop_padding=settings.crop_padding,
                         flip=settings.flip)
    y = batch["label"]
    beta = state.war.beta
    x_adv, probe = None, jnp.zeros((x.shape[0],), jnp.float32)
    if settings.method != "standard":
      eval_logits = logits_fn(graphdef, state.params, state.model_state)
      x_adv, probe = attacks.pgd_lipschitz_probe(eval_logits, x, y, key=attack_key,
                                                 **settings.attack.kwargs())

    def loss_fn(params):
      logits_nat, model_state = apply(graphdef, params, state.model_state, x, train=True)
      natural = losses.cross_entropy(logits_nat, y)
      if settings.method == "standard":
        return natural, (model_state, natural, jnp.zeros(()), logits_nat, logits_nat)
      logits_adv, model_state = apply(graphdef, params, model_state, x_adv, train=True)
      if settings.method == "trades":
        loss = losses.trades(logits_nat, logits_adv, y, beta,
                             stop_gradient_target=settings.stop_gradient_target)
        robust = jnp.mean(losses.trades_kl(logits_nat, logits_adv))
      elif settings.method == "mart":
        loss = losses.mart(logits_nat, logits_adv, y, beta)
        # λ's rules weigh its term against MART's unweighted one, the boosted CE on x̂.
        natural = jnp.mean(losses.mart_boosted_cross_entropy(logits_adv, y))
        robust = jnp.mean(losses.mart_weighted_kl(logits_nat, logits_adv, y))
      else:
        loss = losses.pgd_at(logits_nat, logits_adv, y, beta)
        robust = losses.cross_entropy(logits_adv, y) - natural
      return loss, (model_state, natural, robust, logits_nat, logits_adv)

    params_at = state.params  # Where the gradient is taken: w, or w + v under AWP.
    if settings.awp_gamma:
      gamma = jnp.where(state.step >= settings.awp_start_step, settings.awp_gamma, 0.0)
      params_at = awp.perturbed_params(lambda p: loss_fn(p)[0], state.params, gamma)
    grads, (model_state, natural, robust, logits_nat, logits_adv) = jax.grad(
        loss_fn, has_aux=True)(params_at)
    # Weight decay acts on w + v, as the reference's optimizer step before it restores w.
    updates, opt_state = optimizer.update(grads, state.opt_state, params_at)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if settings.ema_decay:
      ema_params = optim.update_ema(ema_params, params, settings.ema_decay, state.step)
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                              opt_state=opt_state,
                              war=settings.rule.update(state.war, natural, robust),
                              ema_params=ema_params)
    step_metrics = {
        "loss": natural + beta * robust,
        "natural_loss": natural,
        "robust_term": robust,
        "beta": beta,
        "train_accuracy": jnp.mean(jnp.argmax(logits_nat, -1) == y),
        "train_robust_accuracy": jnp.mean(jnp.argmax(logits_adv, -1) == y),
        "lipschitz_probe": jnp.mean(probe),
        # Checked on the host when the metrics are fetched: a diverged step stops the run.
        "finite": {"logits": jnp.isfinite(logits_nat).all() & jnp.isfinite(logits_adv).all(),
                   "loss": jnp.isfinite(natural) & jnp.isfinite(robust),
                   "parameters": jnp.all(jnp.array([jnp.isfinite(p).all()
                                                    for p in jax.tree.leaves(params)]))},
    }
    return new_state, step_metrics

  return train_step


def natural_and_adversarial_logits(eval_logits: Callable, x: jax.Array,
                                   x_adv: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Both predictions from one forward pass over twice the batch, which fills the device
  better than two passes. Evaluation mode computes each example on its own, so the result is
  the two passes'. Each example's two copies sit side by side, so a batch sharded on its first
  axis stays where it is (no data moves between devices)."""
  pairs = jnp.stack([x, x_adv], axis=1).reshape(-1, *x.shape[1:])
  logits = eval_logits(pairs).reshape(x.shape[0], 2, -1)
  return logits[:, 0], logits[:, 1]


def make_eval_step(graphdef: nnx.GraphDef, attack: AttackSettings) -> Callable:
  """Returns step(params, model_state, batch, key) -> counts.

  batch = {"image", "label", "mask"}; masked-out (padding) rows count nowhere. Counts are the
  `metrics.robustness_counts` cells plus `lipschitz_sum`, the sum of the attack's
  local-Lipschitz probe over real rows.
  """

  def eval_step(params, model_state, batch, key):
    eval_logits = logits_fn(graphdef, params, model_state)
    x, y, mask = batch["image"], batch["label"], batch["mask"]
    x_adv, probe = attacks.pgd_lipschitz_probe(eval_logits, x, y, key=key, **attack.kwargs())
    counts = metrics.robustness_counts(*natural_and_adversarial_logits(eval_logits, x, x_adv),
                                       y, mask)
    counts["lipschitz_sum"] = jnp.sum(jnp.where(mask, probe, 0.0))
    return counts

  return eval_step
