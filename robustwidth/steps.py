"""Pure, jit-able training and evaluation steps for standard, PGD-AT, TRADES and MART training.

BatchNorm runs in evaluation mode inside the attack (the attack sees `logits_fn`) and in
training mode for the loss, where the clean and adversarial batches each normalize with their
own batch statistics. The running statistics move as the reference's training-mode passes move
them (`TrainSettings.batch_norm_updates`): TRADES' reference runs clean, adversarial, clean;
Madry's PGD-AT the adversarial batch alone; the authors' PGD-AT adversarial, then clean; MART
clean, then adversarial. A batch folded in twice is folded in again without a second pass
(`fold_batch_statistics`).
Madry's clean pass still runs, for the logged natural loss and accuracy (and WAR), but it moves
no statistics and at λ = 1 its gradient is exactly zero.
Every step's randomness comes from fold_in(state.key, state.step), so a resumed run draws
exactly the keys an uninterrupted one would.
"""
import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from robustwidth import awp, lipschitz, losses, metrics, optim, war
from robustwidth.data.augment import random_crop_flip
from robustwidth.models.functional import apply, logits_fn
from robustwidth.models.layers import fold_batch_statistics

METHODS = ("standard", "pgd_at", "trades", "mart")
BATCHES = ("clean", "adversarial")


def reference_beta(method: str) -> float:
  """λ (TRADES β) when the config leaves it unset: TRADES' CIFAR setting 6 for trades, 1 (Madry)
  for pgd_at, MART's reference 6 for mart; standard training has no regularizer."""
  return {"standard": 0.0, "pgd_at": 1.0, "trades": 6.0, "mart": 6.0}[method]


def reference_attack_init(method: str) -> str:
  """The attack start when the config leaves it unset: TRADES' x + 0.001·N(0, 1) for trades
  (and MART's reference, which starts the same way), Madry's uniform start in the ball for
  pgd_at."""
  return "normal" if method in ("trades", "mart") else "uniform"


def reference_batch_norm_updates(method: str, pgd_at_form: str = "difference"
                                 ) -> tuple[str, ...]:
  """The batches whose statistics move the running statistics, in the order the reference's
  training-mode passes run: TRADES (yaodongyu/TRADES) clean, adversarial, clean; Madry's PGD-AT
  (the difference form, λ = 1: CE(x̂) alone) adversarial; the authors' clamped PGD-AT
  (tabrisweapon/A-temp-project) adversarial, clean; MART (YisenWang/MART) clean, adversarial;
  standard training clean."""
  if method == "trades":
    return ("clean", "adversarial", "clean")
  if method == "mart":
    return ("clean", "adversarial")
  if method == "pgd_at":
    return ("adversarial",) if pgd_at_form == "difference" else ("adversarial", "clean")
  return ("clean",)


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
  unroll: bool | int = False      # the step loop's; True for FLOP counts (see `attacks.pgd`)

  def kwargs(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  method: str                     # one of METHODS
  attack: AttackSettings | None   # the inner maximization (None for standard training)
  rule: war.Rule | None = None    # λ (β) rule; None: fixed at the method's reference_beta
  stop_gradient_target: bool = False
  pgd_at_form: str = "difference"  # losses.PGD_AT_FORMS
  # Batches folded into the BatchNorm running statistics, in order (BATCHES); None: the
  # method's reference (reference_batch_norm_updates).
  batch_norm_updates: tuple[str, ...] | None = None
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
    if self.pgd_at_form not in losses.PGD_AT_FORMS:
      raise ValueError(f"Unknown PGD-AT form {self.pgd_at_form!r}; use one of "
                       f"{losses.PGD_AT_FORMS}.")
    if self.rule is None:
      object.__setattr__(self, "rule", war.Rule(beta0=reference_beta(self.method)))
    if self.batch_norm_updates is None:
      object.__setattr__(self, "batch_norm_updates",
                         reference_batch_norm_updates(self.method, self.pgd_at_form))
    allowed = ("clean",) if self.method == "standard" else BATCHES
    if not self.batch_norm_updates or not set(self.batch_norm_updates) <= set(allowed):
      raise ValueError(f"batch_norm_updates {self.batch_norm_updates!r} must name one or more "
                       f"of {allowed} for {self.method!r} training.")


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    settings: TrainSettings) -> Callable:
  """Returns step(state, batch) -> (state, metrics); batch = {"image", "label"}.

  metrics["loss"] is the loss the gradient was taken of; metrics["finite"] says whether the
  logits, loss and updated parameters are finite.
  """

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
      x_adv, probe = lipschitz.pgd_lipschitz_probe(eval_logits, x, y, key=attack_key,
                                                   **settings.attack.kwargs())

    def loss_fn(params):
      # Both passes start from the same running statistics; the statistics are then folded
      # in the reference's order (training-mode logits do not depend on them).
      after = {}
      logits_nat, after["clean"] = apply(graphdef, params, state.model_state, x, train=True)
      natural = losses.cross_entropy(logits_nat, y)
      if settings.method == "standard":
        loss, robust, logits_adv = natural, jnp.zeros(()), logits_nat
      else:
        logits_adv, after["adversarial"] = apply(graphdef, params, state.model_state, x_adv,
                                                 train=True)
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
          loss = losses.pgd_at(logits_nat, logits_adv, y, beta, settings.pgd_at_form)
          robust = losses.pgd_at_regularizer(logits_nat, logits_adv, y, settings.pgd_at_form)
      model_state = fold_batch_statistics(
          state.model_state, [after[name] for name in settings.batch_norm_updates])
      return loss, (model_state, natural, robust, logits_nat, logits_adv)

    params_at = state.params  # Where the gradient is taken: w, or w + v under AWP.
    if settings.awp_gamma:
      gamma = jnp.where(state.step >= settings.awp_start_step, settings.awp_gamma, 0.0)
      params_at = awp.perturbed_params(lambda p: loss_fn(p)[0], state.params, gamma)
    (loss, (model_state, natural, robust, logits_nat, logits_adv)), grads = (
        jax.value_and_grad(loss_fn, has_aux=True)(params_at))
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
        "loss": loss,
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
    x_adv, probe = lipschitz.pgd_lipschitz_probe(eval_logits, x, y, key=key, **attack.kwargs())
    counts = metrics.robustness_counts(*natural_and_adversarial_logits(eval_logits, x, x_adv),
                                       y, mask)
    counts["lipschitz_sum"] = jnp.sum(jnp.where(mask, probe, 0.0))
    return counts

  return eval_step
