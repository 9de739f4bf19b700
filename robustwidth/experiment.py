"""From a validated config to the objects of one run, as pure functions.

The trainer, restoring a checkpoint for evaluation and the cost estimates all build a run's
model, optimizer, step settings and train state here, so the three cannot drift apart. Besides
the config, a run's objects depend only on a `RunSpec`: the data's shapes and size and the
adaptive λ rule's r0. The trainer measures it from the loaded data and the reference run at
start-up and saves it with every checkpoint, so a restore needs neither the data nor another
run's record; the cost estimates take it from `data.INFO` without loading anything.

  spec = experiment.spec_from_info(config)
  state = experiment.abstract_train_state(config, spec)    # shapes and dtypes only
  step = steps.make_train_step(experiment.abstract_model(config, spec)[0],
                               experiment.optimizer(config, spec),
                               experiment.train_settings(config, spec))
"""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from robustwidth import config as config_lib
from robustwidth import data, models, optim, steps, war


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What a run's objects take beyond its config."""
  image_shape: tuple[int, int, int]
  num_classes: int
  steps_per_epoch: int                  # optimizer steps per epoch (schedule, AWP's start)
  reference_ratio: float | None = None  # the adaptive λ rule's r0 read from the reference
                                        # run (None: config.war.reference_ratio)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, fields: dict) -> "RunSpec":
    return cls(**{**fields, "image_shape": tuple(fields["image_shape"])})


def extra_per_batch(config: ml_collections.ConfigDict) -> int:
  """Rows of every training batch drawn from the extra data."""
  return round(config.data.extra_fraction * config.train.batch_size)


def spec_from_info(config: ml_collections.ConfigDict,
                   reference_ratio: float | None = None) -> RunSpec:
  """The spec of a run on the full published data set, from `data.INFO` (nothing loaded)."""
  image_shape, num_classes, num_train, _ = data.INFO[config.data.name]
  num_train = config.data.train_examples or num_train
  return RunSpec(image_shape, num_classes,
                 num_train // (config.train.batch_size - extra_per_batch(config)),
                 reference_ratio)


def create_model(config: ml_collections.ConfigDict, image_shape, num_classes: int
                 ) -> nnx.Module:
  dtype = None if config.model.dtype == "float32" else jnp.dtype(config.model.dtype)
  return models.create_model(
      config.model.family, width=config.model.width, num_classes=num_classes,
      input_shape=image_shape, seed=config.seed, depth=config.model.depth,
      base_channels=config.model.base_channels, strides=config.model.strides,
      cnn_head=config.model.cnn_head, parameterization=config.model.parameterization,
      dtype=dtype)


def abstract_model(config: ml_collections.ConfigDict, spec: RunSpec):
  """(graphdef, params, model_state) with shapes and dtypes in place of values."""
  return models.split(nnx.eval_shape(
      lambda: create_model(config, spec.image_shape, spec.num_classes)))


def learning_rate_schedule(config: ml_collections.ConfigDict, spec: RunSpec) -> optax.Schedule:
  return optim.learning_rate_schedule(
      config.train.schedule, base_lr=config.train.lr, steps_per_epoch=spec.steps_per_epoch,
      epochs=config.train.epochs, decay_epochs=config.train.decay_epochs,
      halving_start=config.train.halving_start)


def optimizer(config: ml_collections.ConfigDict, spec: RunSpec
              ) -> optax.GradientTransformation:
  return optim.sgd(learning_rate_schedule(config, spec), momentum=config.train.momentum,
                   weight_decay=config.train.weight_decay)


def war_rule(config: ml_collections.ConfigDict, reference_ratio: float | None = None
             ) -> war.Rule:
  """The λ rule of one run; `reference_ratio` overrides config.war.reference_ratio."""
  ratio = config.war.reference_ratio if reference_ratio is None else reference_ratio
  return war.Rule(name=config.war.rule, beta0=config_lib.beta(config),
                  width=config.model.width, reference_width=config.war.reference_width,
                  gamma=config.war.gamma, reference_ratio=ratio,
                  beta_max=config.war.beta_max, ema_decay=config.war.ema_decay)


def train_settings(config: ml_collections.ConfigDict, spec: RunSpec) -> steps.TrainSettings:
  attack = None
  if config.train.method != "standard":
    attack = steps.AttackSettings(
        eps=config.attack.eps, step_size=config.train.attack_step_size,
        num_steps=config.train.attack_steps, norm=config.attack.norm,
        loss="kl" if config.train.method == "trades" else "ce",
        init=config_lib.attack_init(config))
  return steps.TrainSettings(
      method=config.train.method, attack=attack,
      rule=war_rule(config, spec.reference_ratio),
      stop_gradient_target=config.train.stop_gradient_target,
      pgd_at_form=config.train.pgd_at_form,
      batch_norm_updates=tuple(config.train.batch_norm_updates) or None,
      crop_padding=config.data.crop_padding, flip=config.data.flip,
      awp_gamma=config.train.awp_gamma,
      awp_start_step=(config.train.awp_start_epoch - 1) * spec.steps_per_epoch,
      ema_decay=config.train.ema_decay)


def eval_attack(config: ml_collections.ConfigDict) -> steps.AttackSettings:
  """The per-epoch evaluation's PGD."""
  return steps.AttackSettings(eps=config.attack.eps, step_size=config.eval.step_size,
                              num_steps=config.eval.num_steps, norm=config.attack.norm,
                              loss="ce", init=config.eval.init, restarts=config.eval.restarts)


def train_state(config: ml_collections.ConfigDict, spec: RunSpec, params, model_state
                ) -> steps.TrainState:
  """The state a run starts from, around the model's initial `params` and `model_state`."""
  settings = train_settings(config, spec)
  return steps.init_train_state(params, model_state, optimizer(config, spec), config.seed,
                                settings.rule, ema=settings.ema_decay > 0)


def abstract_train_state(config: ml_collections.ConfigDict, spec: RunSpec) -> steps.TrainState:
  """The train state's shapes and dtypes: the target a checkpoint is restored onto."""
  _, params, model_state = abstract_model(config, spec)
  return jax.eval_shape(lambda p, s: train_state(config, spec, p, s), params, model_state)


def batch_spec(size: int, image_shape, sharding=None, mask: bool = False) -> dict:
  """A batch's shapes and dtypes (`mask`: the evaluation's padding mask too)."""
  spec = {"image": jax.ShapeDtypeStruct((size, *image_shape), jnp.float32, sharding=sharding),
          "label": jax.ShapeDtypeStruct((size,), jnp.int32, sharding=sharding)}
  if mask:
    spec["mask"] = jax.ShapeDtypeStruct((size,), jnp.bool_, sharding=sharding)
  return spec
