"""The NTK width study (docs/paper.md §3): how input-gradient norms, the authors' local-Lipschitz
probe and the empirical NTK scale with width, at initialization over many seeds and after
training with each method of `trained_methods` (standard, TRADES, ...), under standard and NTK
parameterization.

Per family, parameterization, width and seed (and training method), on fixed test examples:
  grad_{ce,margin}_{l1,l2,linf}  mean over examples of ‖∇ₓL‖ (ℓ1 is the Lipschitz norm for ℓ∞)
  lipschitz_probe                mean of the authors' probe: max of ‖∇ₓ KL‖₁ over the iterates
                                 of the TRADES inner attack (config.attack.eps and
                                 config.train.attack_steps / attack_step_size)
  ntk_trace                      Tr Θ / n over the n × K outputs of n examples
  ntk_eig{1,2,...}               top eigenvalues of that [nK, nK] NTK Gram matrix
Each quantity is fitted as log(value) = slope · log(width) + c over every (width, seed) point
of one (phase, training method, family, parameterization), with a Student-t confidence interval
on the slope (`ntk.fit_power_law`).

Workdir: measurements.jsonl (one record per model), fits.jsonl (one per fitted slope),
implementations.jsonl (time and memory of each NTK implementation), report.md, plots/*.png
and trained/<method>_<family>_<parameterization>_w<width>/ (the training runs, reused when
finished).
"""
import itertools
import json
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

from robustwidth import config as config_lib
from robustwidth import data, evaluation, lipschitz, ntk, steps, train
from robustwidth.models import PARAMETERIZATIONS, create_model, functional

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PHASES = ("init", "trained")
_GRADIENTS = tuple((f"grad_{loss}_{name}", loss, order) for loss in ("ce", "margin")
                   for name, order in (("l1", 1), ("l2", 2), ("linf", np.inf)))


def quantities(study: ml_collections.ConfigDict) -> tuple[str, ...]:
  return (tuple(name for name, _, _ in _GRADIENTS) + ("lipschitz_probe", "ntk_trace")
          + tuple(f"ntk_eig{i + 1}" for i in range(study.top_eigenvalues)))


def _check(config: ml_collections.ConfigDict) -> None:
  study = config.ntk_width
  for family in tuple(study.families) + tuple(study.trained_families):
    if family not in study:
      raise ValueError(f"config.ntk_width.{family} is missing; each family in families and "
                       "trained_families needs its widths, base_channels and depth.")
    widths = tuple(study[family].widths)
    if len(set(widths)) < 2 or min(widths) < 1:
      raise ValueError(f"config.ntk_width.{family}.widths = {widths}: a slope needs two or "
                       "more distinct widths >= 1.")
  if study.init_seeds < 2 and len(study.families):
    raise ValueError("config.ntk_width.init_seeds must be >= 2 for a spread over seeds.")
  for parameterization in tuple(study.parameterizations) + tuple(
      study.trained_parameterizations):
    if parameterization not in PARAMETERIZATIONS:
      raise ValueError(f"config.ntk_width parameterization {parameterization!r} is unknown; "
                       f"use {PARAMETERIZATIONS}.")
  for method in study.trained_methods:
    if method not in steps.METHODS:
      raise ValueError(f"config.ntk_width.trained_methods has {method!r}; use methods of "
                       f"{steps.METHODS}.")
  if study.implementation not in ntk.IMPLEMENTATIONS:
    raise ValueError(f"config.ntk_width.implementation must be one of {ntk.IMPLEMENTATIONS}.")


def _model(config, family: str, width: int, parameterization: str, seed: int, split):
  settings = config.ntk_width[family]
  return create_model(family, width=width, num_classes=split.num_classes,
                      input_shape=split.image_shape, seed=seed, depth=settings.depth,
                      base_channels=settings.base_channels, parameterization=parameterization)


# Compile time dominates these small measurements on CPU: XLA's backend optimization level 0
# compiled them 2-3x faster (WRN-10-4 probe: 3.8 s against 12.4 s) and ran them at most 2x
# slower (0.7 s against 0.3 s). The implementation timings keep the default level.
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


def _init_records(config, split, log) -> list[dict]:
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


def _train_config(config, method: str, family: str, width: int, parameterization: str):
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


def _trained_records(config, split, workdir, log) -> list[dict]:
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
            _train_config(config, method, family, width, parameterization), run_dir)
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


def _setting(record) -> tuple:
  """What one fit pools over seeds and widths: (phase, method, family, parameterization)."""
  return record["phase"], record["method"], record["family"], record["parameterization"]


def _settings(records) -> list[tuple]:
  return sorted({_setting(r) for r in records},
                key=lambda k: (PHASES.index(k[0]), k[1] or "", k[2], k[3]))


def _fits(records, study) -> list[dict]:
  fits = []
  for phase, method, family, parameterization in _settings(records):
    rows = [r for r in records if _setting(r) == (phase, method, family, parameterization)]
    for quantity in quantities(study):
      rows_with = [r for r in rows if r[quantity] is not None]
      if not rows_with:
        continue
      widths = np.array([r["width"] for r in rows_with], float)
      values = np.array([r[quantity] for r in rows_with], float)
      base = {"phase": phase, "method": method, "family": family,
              "parameterization": parameterization, "quantity": quantity}
      usable = np.isfinite(values) & (values > 0)
      if usable.sum() < 3 or np.unique(widths[usable]).size < 2:
        fits.append({**base, "slope": None, "num_points": int(usable.sum()),
                     "note": "too few positive values to fit"})
        continue
      fit = ntk.fit_power_law(widths[usable], values[usable], confidence=study.confidence)
      fits.append({**base, **fit, "dropped": int((~usable).sum())})
  return fits


def _implementation_records(config, split, log) -> list[dict]:
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


def _write_jsonl(path: str, records: list[dict]) -> None:
  with open(path, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def _plot(records, fits, study, workdir) -> list[str]:
  """One figure per (phase, training method, family): each quantity against width, log-log,
  mean ± std over seeds per parameterization, with the fitted power law dashed."""
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  names, paths = quantities(study), []
  for phase, method in dict.fromkeys(k[:2] for k in _settings(records)):
    for family in sorted({r["family"] for r in records if _setting(r)[:2] == (phase, method)}):
      columns = 5
      rows_count = -(-len(names) // columns)
      figure, axes = plt.subplots(rows_count, columns, figsize=(3.2 * columns, 2.8 * rows_count),
                                  squeeze=False)
      for axis, quantity in zip(axes.flat, names):
        for parameterization in study.parameterizations:
          rows = [r for r in records if _setting(r) == (phase, method, family, parameterization)
                  and r[quantity] is not None]
          if not rows:
            continue
          widths = sorted({r["width"] for r in rows})
          by_width = [[r[quantity] for r in rows if r["width"] == w] for w in widths]
          means = [np.mean(v) for v in by_width]
          spreads = [np.std(v) for v in by_width]
          line = axis.errorbar(widths, means, yerr=spreads, marker="o", capsize=3,
                               label=parameterization)
          fit = next((x for x in fits if (*_setting(x), x["quantity"]) ==
                      (phase, method, family, parameterization, quantity)), None)
          if fit and fit["slope"] is not None:
            grid = np.geomspace(min(widths), max(widths), 20)
            axis.plot(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], "--",
                      color=line[0].get_color(), linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(quantity, fontsize=9)
        axis.set_xlabel("width")
      for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
      axes.flat[names.index("ntk_trace")].legend(fontsize=8)
      name = phase if method is None else f"{phase}_{method}"
      figure.suptitle(f"{family}, {name.replace('_', ' ')}")
      figure.tight_layout()
      path = os.path.join("plots", f"{family}_{name}.png")
      figure.savefig(os.path.join(workdir, path), dpi=90)
      plt.close(figure)
      paths.append(path)
  return paths


def _format_fit(fit) -> str:
  if fit["slope"] is None:
    return "n/a"
  return f"{fit['slope']:+.3f} [{fit['slope_low']:+.3f}, {fit['slope_high']:+.3f}]"


def _report(config, records, fits, implementations, plots, wall_s) -> str:
  study = config.ntk_width
  lines = [
      "# NTK width study", "",
      f"Data: {config.data.name}, the first {study.num_examples} test examples for gradient "
      f"norms and the probe, the first {study.kernel_examples} for the NTK (its Gram matrix "
      f"over examples × classes). Seeds at initialization: {study.init_seeds}. Probe: ℓ∞, "
      f"ε = {config.attack.eps}, {config.train.attack_steps} steps of "
      f"{config.train.attack_step_size}. NTK: {study.implementation}. Wall time: "
      f"{wall_s:.0f} s.", "",
      f"Each cell: the slope of log(quantity) against log(width) with its "
      f"{study.confidence:.0%} interval (Student t over every (width, seed) point). 0 means no "
      "growth with width; 0.5 is the √width growth of the reading notes (docs/paper.md §3). For "
      "reference, wide-network theory predicts an NTK trace growing linearly with width under "
      "standard parameterization (slope 1, less at small widths, where the width-independent "
      "input layer still weighs) and converging under NTK parameterization (slope 0).", ""]
  first = study.parameterizations[0]
  if len(study.parameterizations) > 1:
    lines += [f"At initialization every parameterization computes the same function "
              f"(models/layers.py), so the gradient norms and the probe are measured once, "
              f"under {first}, and hold for all (\"= {first}\"); the NTK differs and is "
              "measured under each.", ""]
  if study.trained_families and study.trained_methods:
    described = []
    for method in study.trained_methods:
      run = _train_config(config, method, study.trained_families[0], 1, first)
      described.append(method if method == "standard" else
                       f"{method} (β = {config_lib.beta(run):g}, {run.train.attack_steps} "
                       f"inner steps of {run.train.attack_step_size})")
    examples = config.data.train_examples or "all"
    lines += [f"After training: {' and '.join(described)} training on {examples} training "
              f"examples, {config.train.epochs} epochs, lr {config.train.lr} (NTK "
              f"parameterization: {study.ntk_lr}; {config.train.schedule}), batch "
              f"{config.train.batch_size}, one run per method, parameterization and width, "
              "measured at the checkpoint with the best PGD robust accuracy (columns named by "
              "the training method; accuracies under Trained runs).", ""]
  index = {(*_setting(f), f["quantity"]): f for f in fits}
  fitted = {(f["phase"], f["method"], f["parameterization"]) for f in fits}
  columns = [(phase, method, parameterization)
             for phase, method in dict.fromkeys(k[:2] for k in _settings(fits))
             for parameterization in study.parameterizations
             if (phase, method, parameterization) in fitted]
  for family in dict.fromkeys(r["family"] for r in records):
    widths = sorted({r["width"] for r in records if r["family"] == family})
    lines += [f"## {family} (widths {widths} × base_channels {study[family].base_channels}, "
              f"depth {study[family].depth})", "",
              "| quantity | " + " | ".join(
                  f"{p} {q}" if m is None else f"{m}-trained {q}" for p, m, q in columns) + " |",
              "|---" * (len(columns) + 1) + "|"]
    for quantity in quantities(study):
      cells = []
      for phase, method, parameterization in columns:
        fit = index.get((phase, method, family, parameterization, quantity))
        if fit is None:
          measured_once = (phase == "init" and parameterization != first
                           and (phase, method, family, first, quantity) in index)
          cells.append(f"= {first}" if measured_once else "—")
        else:
          cells.append(_format_fit(fit))
      lines.append(f"| {quantity} | " + " | ".join(cells) + " |")
    lines.append("")
  trained = [r for r in records if r["phase"] == "trained"]
  if trained:
    lines += ["## Trained runs", "", "| method | family | parameterization | width | train acc | "
              "natural acc | robust acc (PGD) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['family']} | {r['parameterization']} | {r['width']} | "
              f"{r['train_accuracy']:.1%} | {r['natural_accuracy']:.1%} | "
              f"{r['robust_accuracy']:.1%} |" for r in trained]
    lines.append("")
  if implementations:
    lines += ["## NTK implementations", "",
              "Untraced kernel of the kernel examples, standard parameterization: median wall "
              "time of the compiled function, its compile time and XLA's compiled estimate of "
              "its temporary buffers.", "",
              "| family | width | params | implementation | time (s) | compile (s) | "
              "temp memory (MiB) |", "|---|---|---|---|---|---|---|"]
    for r in implementations:
      memory = "—" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.2f}"
      lines.append(f"| {r['family']} | {r['width']} | {r['params']:,} | {r['implementation']} "
                   f"| {r['time_s']:.4f} | {r['compile_s']:.1f} | {memory} |")
    lines.append("")
  lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Measures, fits and reports; see the module docstring for what goes where."""
  _check(config)
  study = config.ntk_width
  start = time.time()
  primary = jax.process_index() == 0
  log = (lambda message: print(message, flush=True)) if primary else (lambda message: None)
  os.makedirs(workdir, exist_ok=True)
  split = data.load(config.data.name, "test", data_dir=config.data.data_dir)
  records = _init_records(config, split, log)
  records += _trained_records(config, split, workdir, log)
  fits = _fits(records, study)
  implementations = _implementation_records(config, split, log) if study.timing_repeats else []
  if not primary:
    return
  _write_jsonl(os.path.join(workdir, "measurements.jsonl"), records)
  _write_jsonl(os.path.join(workdir, "fits.jsonl"), fits)
  _write_jsonl(os.path.join(workdir, "implementations.jsonl"), implementations)
  plots = _plot(records, fits, study, workdir)
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write(_report(config, records, fits, implementations, plots, time.time() - start))
  log(f"Report: {path}")
