"""AutoAttack (Croce & Hein, ICML 2020) in JAX: the standard ensemble APGD-CE, APGD-T, FAB-T and
Square, run in cascade as the reference (fra31/auto-attack) runs it, its "plus" and "rand"
versions, the ℓ1 threat model (Croce & Hein, ICML 2021), plus named PGD and CW evaluations for
the same suite.

The versions, with the reference's settings (`attack_settings`):
  standard  APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries); for ℓ1,
            APGD-CE with 5 restarts and APGD-T with 5 targets, both on the 3ε/2ε/ε schedule.
  plus      APGD-CE and APGD-DLR with 5 restarts, FAB (untargeted, 5 restarts), Square,
            APGD-T and FAB-T (9 targets each); ℓ∞ and ℓ2.
  rand      APGD-CE and APGD-DLR against a randomized model, each gradient averaged over 20
            draws (expectation over transformation); ℓ∞ and ℓ2. `logits_fn(x, key)` takes a
            key; predictions use one fixed draw per example. Each example is run alone with
            keys folded from its index, so no draw depends on the rest of its batch.
  custom    the named attacks, in order, with the standard version's settings (FAB: plus's).

Each attack runs only on the examples still robust after the attacks before it, so every
example ends with the per-example worst case. Remaining examples go through in chunks of at
most `batch_size`, each padded to the next power of two (at most `batch_size`), so an attack
compiles once per padded size and never per count. Every random draw of APGD, APGD-T and
Square, and every draw of the rand version's model, is made from fold_in(key, attack, example
index): an example's result does not depend on the batch size or on which examples are still
being attacked.

Pass `logits_fn` as a `jax.tree_util.Partial` holding the weights (as
`robustwidth.models.logits_fn` returns it): its arrays then enter the compiled attacks as
inputs instead of constants, and models of one architecture share the compiled code.

  logits_fn = models.logits_fn(graphdef, params, model_state)
  x_adv, report = attacks.autoattack(logits_fn, x, y, key=jax.random.key(0), eps=8 / 255)
  report["robust_accuracy"], report["accuracy_after"]   # final, and after each attack
"""
import re
import time
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustwidth import metrics, validation
from robustwidth.attacks import checks, components, geometry
from robustwidth.attacks.apgd import apgd_batch, apgd_targeted_batch
from robustwidth.attacks.fab import fab_batch, fab_targeted_batch
from robustwidth.attacks.pgd import pgd
from robustwidth.attacks.square import NUM_QUERIES, P_INIT, check_image_shape, square_batch

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
PLUS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
RAND = ("apgd-ce", "apgd-dlr")
NAMED = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "pgd-<steps>",
         "cw-<steps>")
VERSIONS = ("standard", "plus", "rand", "custom")
EOT_DRAWS = 20
_PGD = re.compile(r"^(pgd|cw)-([1-9][0-9]*)$")


def attack_settings(name: str, num_classes: int, *, norm: str = "linf",
                    version: str = "standard") -> dict:
  """The settings the named attack runs with in the given version and norm (the
  reference's, for AutoAttack's components).

  pgd-k / cw-k: k steps of 2.5·ε/k (Madry et al.) from a uniform random start, on
  cross-entropy or the margin loss (Carlini & Wagner's).
  """
  targets = min(9, num_classes - 1)
  apgd = (dict(initial_step="eps", eps_schedule="3*eps,2*eps,eps", initial_sparsity=0.2)
          if norm == "l1" else dict(initial_step="2*eps", momentum=0.75, rho=0.75))
  if name in ("apgd-ce", "apgd-dlr"):
    restarts = 5 if version == "plus" or norm == "l1" else 1
    return dict(loss=name[5:], num_steps=100, restarts=restarts,
                eot_draws=EOT_DRAWS if version == "rand" else 1, **apgd)
  if name == "apgd-t":
    return dict(loss="targeted-dlr", num_steps=100,
                num_targets=min(5, targets) if norm == "l1" else targets, **apgd)
  if name in ("fab", "fab-t"):
    return dict(num_steps=100, alpha_max=0.1, eta=1.05, beta=0.9,
                **(dict(num_targets=targets, restarts=1) if name == "fab-t" else
                   dict(restarts=5)))
  if name == "square":
    return dict(num_queries=NUM_QUERIES, p_init=P_INIT, loss="margin")
  match = _PGD.match(name)
  if match:
    steps = int(match.group(2))
    return dict(loss="ce" if match.group(1) == "pgd" else "margin", num_steps=steps,
                step_size=f"2.5*eps/{steps}", init="uniform")
  raise ValueError(f"Unknown attack {name!r}; use one of {NAMED}.")


def _run_attack(fn, randomized, x, y, indices, key, active, eps, *, name, norm, num_classes,
                version):
  """One padded chunk of one attack: (x_adv, fooled) with x_adv = x where not fooled."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
  settings = attack_settings(name, num_classes, norm=norm, version=version)
  if name in ("apgd-ce", "apgd-dlr"):
    x_adv = apgd_batch(fn, x, y, keys, eps, norm=norm, loss=settings["loss"],
                       num_steps=settings["num_steps"], restarts=settings["restarts"],
                       randomized=randomized, eot_draws=settings["eot_draws"])
  elif name == "apgd-t":
    x_adv = apgd_targeted_batch(fn, x, y, keys, eps, norm=norm, num_steps=settings["num_steps"],
                                num_targets=settings["num_targets"])
  elif name == "fab":
    x_adv = fab_batch(fn, x, y, keys, eps, norm=norm, num_steps=settings["num_steps"],
                      restarts=settings["restarts"])
  elif name == "fab-t":
    x_adv = fab_targeted_batch(fn, x, y, eps, norm=norm, num_steps=settings["num_steps"],
                               num_targets=settings["num_targets"])
  elif name == "square":
    x_adv = square_batch(fn, x, y, keys, eps, norm=norm, active=active,
                         num_queries=settings["num_queries"], p_init=settings["p_init"])
  else:
    # PGD draws its start from one key per chunk, the one of the chunk's first example.
    steps = settings["num_steps"]
    x_adv = pgd(fn, x, y, key=keys[0], eps=eps, step_size=2.5 * eps / steps, num_steps=steps,
                norm=norm, loss=settings["loss"])
  fooled = active & components.misclassified(fn, x_adv, y)
  return jnp.where(components.rows(fooled, x), x_adv, x), fooled


_run_attack_jit = jax.jit(_run_attack, static_argnames=("name", "norm", "num_classes", "version"))


def _fixed_draws(randomized, keys, x):
  """A randomized model `randomized(x, key)` at the fixed draw of each example, keys[b]."""
  return components.per_example_draws(randomized, x, keys)


@jax.jit
def _logits(fn, x):
  return fn(x)


def _padded_size(count: int, batch_size: int) -> int:
  return min(batch_size, 1 << max(count - 1, 0).bit_length())


def _chunks(indices: np.ndarray, batch_size: int):
  """(padded indices, number of real rows) for each chunk; padding repeats the first row."""
  for start in range(0, len(indices), batch_size):
    chunk = indices[start:start + batch_size]
    size = _padded_size(len(chunk), batch_size)
    yield np.concatenate([chunk, np.full(size - len(chunk), chunk[0])]), len(chunk)


def _attack_names(version: str, attacks, norm: str) -> list[str]:
  validation.check_choice("AutoAttack version", version, VERSIONS)
  if version in ("plus", "rand") and norm == "l1":
    raise ValueError(f"AutoAttack's {version!r} version is defined for linf and l2 (the "
                     "reference warns with l1); for l1 use version='standard' or 'custom'.")
  if version != "custom":
    names = {"standard": STANDARD, "plus": PLUS, "rand": RAND}[version]
    if attacks is not None:
      raise ValueError(f"attacks is only used with version='custom'; the {version} version "
                       f"runs {names}.")
    return list(names)
  if not attacks:
    raise ValueError(f"version='custom' needs a list of attacks, e.g. {list(STANDARD)}.")
  return check_attack_names(attacks)


def version_settings(version: str, norm: str, num_classes: int) -> dict:
  """name -> settings of each attack a (non-custom) version runs, in order."""
  return {name: attack_settings(name, num_classes, norm=norm, version=version)
          for name in _attack_names(version, None, norm)}


def check_attack_names(names) -> list[str]:
  """The names as a list; a ValueError names an unknown or repeated one."""
  names = list(names)
  if len(set(names)) != len(names):
    raise ValueError(f"Each attack may run once; got {names}.")
  for name in names:
    if name not in NAMED[:6] and not _PGD.match(name):
      raise ValueError(f"Unknown attack {name!r}; use one of {NAMED}.")
  return names


def _key_for(key, name: str):
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def autoattack(logits_fn: components.LogitsFn | Callable[[jax.Array, jax.Array], jax.Array],
               x, y, *, key, eps, norm: str = "linf", version: str = "standard", attacks=None,
               batch_size: int = 256):
  """Runs AutoAttack; returns (x_adv, report).

  logits_fn: x -> [B, K] logits in evaluation mode (for version "rand", a randomized model
  `logits_fn(x, key)`). x: [N, ...] in [0, 1] (NHWC images when Square runs). norm: "linf",
  "l2" or "l1". version: "standard", "plus", "rand" (module doc) or "custom": the `attacks`
  listed (names in `NAMED`, e.g. "pgd-20", "cw-20"), in order.

  x_adv[i] lies in B(x_i, eps) ∩ [0, 1]: the first adversarial example found for example i,
  or x_i if it stayed robust. The report holds clean_accuracy; robust_accuracy (the final one);
  accuracy_after (name -> robust accuracy after each attack, "clean" first); seconds per
  attack (wall time, compilation included); settings per attack; robust (the [N] per-example
  worst-case flags); perturbation_stability and the decomposition counts of
  `metrics.robustness_counts`; max_perturbation; and the call's arguments.
  """
  names = _attack_names(version, attacks, norm)
  validation.check_positive_int("batch_size", batch_size)
  randomized = components.as_partial(logits_fn) if version == "rand" else None

  def predictor(rows):
    """The model that decides the predictions of the examples `rows` (indices into x): for
    version "rand", each example's fixed draw, fold_in(fold_in(key, 0), index)."""
    if randomized is None:
      return components.as_partial(logits_fn)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, 0), i))(
        jnp.asarray(rows))
    return jax.tree_util.Partial(_fixed_draws, randomized, keys)

  min_classes = 4 if "apgd-t" in names else 3 if "apgd-dlr" in names else 2
  num_classes = components.check_args(predictor(np.arange(len(x))), x, y, eps, norm,
                                      min_classes=min_classes)
  if "square" in names:
    check_image_shape(x, norm)
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int32)
  eps = jnp.float32(eps)

  first = np.arange(min(batch_size, len(x)))
  fn = predictor(first)
  if version != "rand":   # as the reference, which expects randomness there
    checks.check_randomized(fn, x[first])
  checks.check_probabilities(fn(x[first]))
  checks.check_zero_gradients(fn, x[first], y[first])

  all_rows = np.arange(len(x))
  robust = np.zeros(len(x), bool)
  for rows, count in _chunks(all_rows, batch_size):
    logits = np.asarray(_logits(predictor(rows), x[rows]))[:count]
    validation.check_finite_logits(logits, "logits_fn's logits of the clean examples")
    robust[rows[:count]] = logits.argmax(-1) == y[rows[:count]]
  x_adv = x.copy()
  accuracy_after = {"clean": float(robust.mean())}
  seconds = {}
  for name in names:
    start = time.perf_counter()
    attack_key = _key_for(key, name)
    for rows, count in _chunks(np.flatnonzero(robust), batch_size):
      active = np.arange(len(rows)) < count
      out, fooled = _run_attack_jit(predictor(rows), randomized, x[rows], y[rows],
                                    jnp.asarray(rows), attack_key, jnp.asarray(active), eps,
                                    name=name, norm=norm, num_classes=num_classes,
                                    version=version)
      fooled = np.asarray(fooled)[:count]
      hit = rows[:count][fooled]
      x_adv[hit] = np.asarray(out)[:count][fooled]
      robust[hit] = False
    seconds[name] = time.perf_counter() - start
    accuracy_after[name] = float(robust.mean())
  checks.check_square(accuracy_after)

  counts = None
  for rows, count in _chunks(all_rows, batch_size):
    mask = jnp.asarray(np.arange(len(rows)) < count)
    fn = predictor(rows)
    logits_adv = fn(x_adv[rows])
    validation.check_finite_logits(logits_adv[:count],
                                   "logits_fn's logits of the adversarial examples")
    batch_counts = metrics.robustness_counts(fn(x[rows]), logits_adv, jnp.asarray(y[rows]),
                                             mask)
    counts = metrics.add_counts(counts, batch_counts)
  summary = metrics.fractions(counts)
  report = dict(
      version=version, attacks=names, norm=norm, eps=float(eps), num_examples=len(x),
      batch_size=batch_size, clean_accuracy=accuracy_after["clean"],
      robust_accuracy=float(robust.mean()), accuracy_after=accuracy_after, seconds=seconds,
      settings={name: attack_settings(name, num_classes, norm=norm, version=version)
                for name in names}, robust=robust,
      perturbation_stability=summary["perturbation_stability"],
      counts={k: v for k, v in summary.items() if k in metrics.CELLS or k == "count"},
      max_perturbation=float(np.max(geometry.norm(jnp.asarray(x_adv - x), norm))))
  return x_adv, report


def robustness_curve(logits_fn: components.LogitsFn, x, y, *, key, eps_values,
                     norm: str = "linf", attacks=("apgd-ce",), batch_size: int = 256) -> dict:
  """Robust accuracy of the `attacks` cascade at each ε, plus the ε whose ball covers the
  whole input box (`checks.box_eps`); warns through `checks.check_eps_curve` if accuracy rises
  with ε or stays above 0 there. Returns {eps: robust accuracy}."""
  values = sorted(set(float(e) for e in eps_values) | {checks.box_eps(norm, np.shape(x))})
  curve = {}
  for eps in values:
    _, report = autoattack(logits_fn, x, y, key=key, eps=eps, norm=norm, version="custom",
                           attacks=list(attacks), batch_size=batch_size)
    curve[eps] = report["robust_accuracy"]
  checks.check_eps_curve(list(curve), list(curve.values()), norm=norm, shape=np.shape(x))
  return curve
