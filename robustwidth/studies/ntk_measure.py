"""The NTK width study's measurements (see ntk_width.py for the quantities): one jitted
function per model architecture, vmapped over the seeds at initialization, applied to each
training run's best checkpoint after training, and the timing of each NTK implementation."""
import itertools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robustwidth import data, evaluation, lipschitz, ntk, train
from robustwidth.models import create_model, functional

_GRADIENTS = tuple((f"grad_{loss}_{name}", loss, order) for loss in ("ce", "margin")
                   for name, order in (("l1", 1), ("l2", 2), ("linf", np.inf)))


def quantities(study: ml_collections.ConfigDict) -> tuple[str, ...]:
  return (tuple(name for name, _, _ in _GRADIENTS) + ("lipschitz_probe", "ntk_trace")
          + tuple(f"ntk_eig{i + 1}" for i in range(study.top_eigenvalues)))


def _model(config, family: str, width: int, parameterization: str, seed: int, split):
  settings = config.ntk_width[family]
  return create_model(family, width=width, num_classes=split.num_classes,
                      input_shape=split.image_shape, seed=seed, depth=settings.depth,
                      base_channels=settings.base_channels, parameterization=parameterization)


# Compile time dominates these small measurements (docs/benchmarks.md); timings keep the default.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _measure_fn(graphdef, config, function_quantities: bool):
  """(params, model_state, x, y, x_kernel, key) -> {quantity: scalar} for one model; the NTK
  quantities only unless `function_quantities`."""
  study = config.ntk_width

  def measure(params, model_state, x, y, x_kernel, key):
    result = {}
    if function_quantities:
      logits_fn = functional.logits_fn(graphdef, params, model_state)
      result = {name: jnp.mean(lipschitz.input_gradient_norm(logits_fn, x, y, ord=order,
                                                             loss=loss))
                for name, loss, order in _GRADIENTS}
      result["lipschitz_probe"] = jnp.mean(lipschitz.lipschitz_attack_iterates(
          logits_fn, x, key=key, eps=config.attack.eps,
          step_size=config.train.attack_step_size, num_steps=config.train.attack_steps))
    f = lambda p, z: functional.apply(graphdef, p, model_state, z, train=False)[0]
    kernel = ntk.empirical_ntk(f, params, x_kernel, trace_axes=(),
                               implementation=study.implementation)
    n, _, k, _ = kernel.shape
    gram = jnp.transpose(kernel, (0, 2, 1, 3)).reshape(n * k, n * k)
    result["ntk_trace"] = jnp.trace(gram) / n
    eigenvalues = jnp.linalg.eigvalsh((gram + gram.T) / 2)[::-1]
    for i in range(study.top_eigenvalues):
      result[f"ntk_eig{i + 1}"] = eigenvalues[i]
    return result

  return measure


def _examples(config, split):
  study = config.ntk_width
  x = data.to_float(split.images[:study.num_examples])
  return (jnp.asarray(x), jnp.asarray(split.labels[:study.num_examples]),
          jnp.asarray(x[:study.kernel_examples]))


def _stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def init_records(config, split, log) -> list[dict]:
  """Every seed of every (family, parameterization, width) at initialization, the seeds of
  one setting vmapped through one compiled function.

  At initialization the parameterizations compute the same function (models/layers.py; the
  tests check it), so the function's quantities (gradient norms, probe) are measured under
  the first parameterization listed and left None under the others; the NTK under each.
  """
  study = config.ntk_width
  x, y, x_kernel = _examples(config, split)
  keys = jax.random.split(jax.random.PRNGKey(config.seed), study.init_seeds)
  seeds = [config.seed + s for s in range(study.init_seeds)]
  records = []
  for family in study.families:
    for width in study[family].widths:
      for position, parameterization in enumerate(study.parameterizations):
        start = time.time()
        splits = [functional.split(_model(config, family, width, parameterization, s, split))
                  for s in seeds]
        measure = jax.jit(jax.vmap(_measure_fn(splits[0][0], config, position == 0),
                                   in_axes=(0, 0, None, None, None, 0)),
                          compiler_options=_FAST_COMPILE)
        values = jax.device_get(measure(_stack([s[1] for s in splits]),
                                        _stack([s[2] for s in splits]), x, y, x_kernel, keys))
        for i, seed in enumerate(seeds):
          records.append({"phase": "init", "method": None, "family": family,
                          "parameterization": parameterization, "width": width, "seed": seed,
                          "params": functional.count_params(splits[i][1]),
                          **{name: None for name in quantities(study)},
                          **{k: float(v[i]) for k, v in values.items()}})
        log(f"init {family} width {width} {parameterization}: {len(seeds)} seeds in "
            f"{time.time() - start:.1f} s")
  return records


def train_config(config, method: str, family: str, width: int, parameterization: str):
  """The config of one training run: config.train by `method`, the model of the study's
  `family` at `width`, and under NTK parameterization the lr ntk_width.ntk_lr."""
  settings = config.ntk_width[family]
  run = ml_collections.ConfigDict(config.to_dict())
  del run["ntk_width"]
  run.job = "train"
  run.train.method = method
  run.model.family, run.model.width = family, width
  run.model.depth, run.model.base_channels = settings.depth, settings.base_channels
  run.model.parameterization = parameterization
  if parameterization == "ntk":
    run.train.lr = config.ntk_width.ntk_lr
  return run


def trained_records(config, split, workdir, log) -> list[dict]:
  """Trains one run per (method, family, parameterization, width) with config.train, its
  method replaced (and under NTK parameterization its lr, by ntk_width.ntk_lr), then measures
  its best checkpoint."""
  study = config.ntk_width
  x, y, x_kernel = _examples(config, split)
  records = []
  for method, family in itertools.product(study.trained_methods, study.trained_families):
    for parameterization in study.trained_parameterizations:
      for width in study[family].widths:
        start = time.time()
        run_dir = os.path.join(workdir, "trained",
                               f"{method}_{family}_{parameterization}_w{width}")
        record = train.train_and_evaluate(
            train_config(config, method, family, width, parameterization), run_dir)
        graphdef, params, model_state, _ = evaluation.restore_model(run_dir, "best")
        params, model_state = jax.device_get((params, model_state))
        measure = jax.jit(_measure_fn(graphdef, config, True), compiler_options=_FAST_COMPILE)
        values = jax.device_get(measure(
            params, model_state, x, y, x_kernel, jax.random.PRNGKey(config.seed)))
        records.append({"phase": "trained", "method": method, "family": family,
                        "parameterization": parameterization, "width": width,
                        "seed": config.seed, "params": functional.count_params(params),
                        "train_accuracy": record["train_accuracy"],
                        "natural_accuracy": record["natural_accuracy"],
                        "robust_accuracy": record["robust_accuracy"],
                        **{k: float(v) for k, v in values.items()}})
        log(f"trained {method} {family} {parameterization} width {width}: natural accuracy "
            f"{record['natural_accuracy']:.3f} ({time.time() - start:.1f} s)")
  return records


def implementation_records(config, split, log) -> list[dict]:
  """Wall time and XLA's compiled memory estimate of each NTK implementation, untraced,
  on the kernel examples, per family and width (standard parameterization, first seed)."""
  study = config.ntk_width
  _, _, x_kernel = _examples(config, split)
  records = []
  for family in study.families:
    for width in study[family].widths:
      f, params = ntk.model_fn_and_params(
          _model(config, family, width, "standard", config.seed, split))
      for implementation in ntk.IMPLEMENTATIONS:
        kernel = jax.jit(lambda p, z: ntk.empirical_ntk(f, p, z, trace_axes=(),
                                                        implementation=implementation))
        start = time.time()
        compiled = kernel.lower(params, x_kernel).compile()
        compile_s = time.time() - start
        memory = compiled.memory_analysis()
        times = []
        for _ in range(study.timing_repeats):
          start = time.time()
          jax.block_until_ready(compiled(params, x_kernel))
          times.append(time.time() - start)
        records.append({
            "family": family, "width": width, "implementation": implementation,
            "examples": int(x_kernel.shape[0]), "params": functional.count_params(params),
            "compile_s": compile_s, "time_s": float(np.median(times)),
            "temp_bytes": int(memory.temp_size_in_bytes) if memory else None,
            "output_bytes": int(memory.output_size_in_bytes) if memory else None})
      log(f"implementations {family} width {width} timed")
  return records

