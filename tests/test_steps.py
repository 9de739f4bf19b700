"""Pure train and eval steps: they learn, compile once, and shard without changing results."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustwidth import attacks, data, models, optim, parallel, steps, war
from tests import helpers

ATTACK = steps.AttackSettings(eps=0.1, step_size=0.04, num_steps=2, loss="kl", init="normal")


def _setup(method, rule=None, **attack_changes):
  graphdef, params, state = models.split(helpers.tiny_wrn(width=4))
  optimizer = optim.sgd(optim.learning_rate_schedule("constant", base_lr=0.1,
                                                     steps_per_epoch=1, epochs=1),
                        momentum=0.9, weight_decay=2e-4)
  loss = "kl" if method == "trades" else "ce"
  attack = None if method == "standard" else steps.AttackSettings(
      **{**ATTACK.kwargs(), "loss": loss, **attack_changes})
  settings = steps.TrainSettings(method=method, attack=attack, rule=rule)
  train_state = steps.init_train_state(params, state, optimizer, seed=0, rule=settings.rule)
  return graphdef, optimizer, settings, train_state


def _batch(n=32):
  """The first n real digits: a batch a network can learn in a few steps."""
  split = data.load("digits", "train")
  return {"image": jnp.asarray(split.images[:n]), "label": jnp.asarray(split.labels[:n])}


@pytest.mark.parametrize("method", steps.METHODS)
def test_train_step_lowers_the_loss_on_a_fixed_batch_and_compiles_once(method):
  chex.clear_trace_counter()
  graphdef, optimizer, settings, state = _setup(method)
  step = jax.jit(chex.assert_max_traces(steps.make_train_step(graphdef, optimizer, settings),
                                        n=1), donate_argnums=0)
  batch = _batch()
  losses = []
  for _ in range(10):
    state, step_metrics = step(state, batch)
    losses.append(float(step_metrics["loss"]))
  assert losses[-1] < 0.8 * losses[0], losses
  assert int(state.step) == 10


def test_trades_step_updates_batch_statistics_and_reports_the_probe():
  graphdef, optimizer, settings, state = _setup("trades")
  before = jax.tree.map(np.asarray, state.model_state)
  new_state, m = jax.jit(steps.make_train_step(graphdef, optimizer, settings))(state, _batch())
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before,
                         jax.tree.map(np.asarray, new_state.model_state))
  assert all(jax.tree.leaves(changed))
  assert float(m["lipschitz_probe"]) > 0 and float(m["beta"]) == 6.0


@pytest.mark.parametrize("method,form", [("trades", "difference"), ("pgd_at", "difference"),
                                         ("pgd_at", "clamped")])
def test_logged_loss_is_the_loss_computed_by_hand(method, form):
  # The step logs the value its gradient was taken of; recompute it here from the
  # training-mode logits of the clean and the adversarial batch with numpy.
  rule = war.Rule(beta0=3.0)
  graphdef, optimizer, settings, state = _setup(method, rule)
  settings = steps.TrainSettings(method=method, attack=settings.attack, rule=rule,
                                 pgd_at_form=form)
  batch = _batch(16)
  _, m = jax.jit(steps.make_train_step(graphdef, optimizer, settings))(state, batch)
  attack_key = jax.random.split(jax.random.fold_in(state.key, state.step))[1]
  eval_logits = models.logits_fn(graphdef, state.params, state.model_state)
  x, y = batch["image"], np.asarray(batch["label"])
  x_adv = attacks.pgd(eval_logits, x, y, key=attack_key, **settings.attack.kwargs())

  def log_softmax(x_in):
    z = np.asarray(models.apply(graphdef, state.params, state.model_state, x_in,
                                train=True)[0], np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))

  log_p, log_q = log_softmax(x), log_softmax(x_adv)
  ce_nat, ce_adv = -log_p[np.arange(16), y], -log_q[np.arange(16), y]
  if method == "trades":
    robust = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1))
  elif form == "difference":
    robust = np.mean(ce_adv) - np.mean(ce_nat)
  else:
    robust = np.mean(np.maximum(ce_adv, ce_nat) - ce_nat)
  assert float(m["loss"]) == pytest.approx(np.mean(ce_nat) + 3.0 * robust, rel=1e-5)
  assert float(m["natural_loss"]) == pytest.approx(np.mean(ce_nat), rel=1e-5)


def test_train_step_is_deterministic_for_a_key_and_step():
  graphdef, optimizer, settings, state = _setup("trades")
  step = jax.jit(steps.make_train_step(graphdef, optimizer, settings))
  a, _ = step(state, _batch())
  b, _ = step(state, _batch())
  chex.assert_trees_all_equal(a.params, b.params)


def _run_sharded(mesh, state, step_fn, batches):
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  step = jax.jit(step_fn, in_shardings=(replicated, sharded),
                 out_shardings=(replicated, replicated))
  state = parallel.replicate(state, mesh)
  for batch in batches:
    state, m = step(state, parallel.put_batch(batch, mesh))
  return state, m


# The inner attacks maximize cross-entropy in a large ℓ2 ball from a random point, TRADES' too
# (its loss, KL term and three BatchNorm folds are what is compared): the ℓ2 step g/‖g‖ moves
# with g continuously, where an ℓ∞ step takes each coordinate's sign, and the KL's gradient at
# the start is itself at the level of float rounding (a stationary point), so a KL attack
# follows rounding, which differs with the per-device batch and the CPU's kernels. Sharding
# may then change results only by rounding; a real sharding bug (per-device BatchNorm
# statistics, a per-shard loss) moves parameters by 1e-2 and more.
@pytest.mark.parametrize("method", steps.METHODS)
def test_eight_devices_compute_what_one_device_computes(method):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  graphdef, optimizer, settings, state = _setup(method, norm="l2", eps=3.0, step_size=1.5,
                                                init="uniform", loss="ce")
  fn = steps.make_train_step(graphdef, optimizer, settings)
  batches = [jax.device_get(_batch()) for _ in range(2)]
  one, m1 = _run_sharded(parallel.data_mesh(jax.devices()[:1]), state, fn, batches)
  eight, m8 = _run_sharded(parallel.data_mesh(), state, fn, batches)
  assert eight.params["head"]["kernel"][...].sharding.num_devices == 8
  chex.assert_trees_all_close(jax.device_get(one.params), jax.device_get(eight.params),
                              atol=1e-4, rtol=1e-4)
  chex.assert_trees_all_close(jax.device_get(one.model_state),
                              jax.device_get(eight.model_state), atol=1e-4, rtol=1e-4)
  assert float(m1["loss"]) == pytest.approx(float(m8["loss"]), rel=1e-4)


def test_eval_step_counts_only_real_rows():
  graphdef, _, _, state = _setup("standard")
  eval_step = jax.jit(steps.make_eval_step(graphdef, steps.AttackSettings(
      eps=0.1, step_size=0.04, num_steps=2)))
  batch = {**_batch(16), "mask": jnp.arange(16) < 10}
  counts = eval_step(state.params, state.model_state, batch, jax.random.PRNGKey(0))
  assert int(counts["count"]) == 10
  real = {**_batch(16), "mask": jnp.ones(16, bool)}
  real = {k: v[:10] for k, v in real.items()}
  counts_real = eval_step(state.params, state.model_state, real, jax.random.PRNGKey(0))
  for key in ("correct", "robust", "stable"):
    assert int(counts[key]) == int(counts_real[key])


def test_one_pass_over_both_batches_equals_two_passes_and_moves_no_data():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  graphdef, _, _, state = _setup("standard")
  eval_logits = models.logits_fn(graphdef, state.params, state.model_state)
  x = _batch(16)["image"]
  x_adv = jnp.clip(x + 0.1 * jax.random.normal(jax.random.PRNGKey(0), x.shape), 0.0, 1.0)
  mesh = parallel.data_mesh()
  sharded = parallel.batch_sharded(mesh)
  paired = jax.jit(lambda x, x_adv: steps.natural_and_adversarial_logits(eval_logits, x, x_adv),
                   in_shardings=(sharded, sharded), out_shardings=(sharded, sharded))
  natural, adversarial = paired(jax.device_put(x, sharded), jax.device_put(x_adv, sharded))
  np.testing.assert_allclose(natural, eval_logits(x), atol=1e-5)
  np.testing.assert_allclose(adversarial, eval_logits(x_adv), atol=1e-5)
  assert not np.allclose(natural, adversarial, atol=1e-3)
  hlo = paired.lower(x, x_adv).compile().as_text()
  assert not any(op in hlo for op in ("all-to-all", "all-gather", "collective-permute"))



def _mlp_state(optimizer, rule, ema=False):
  """A BatchNorm-free MLP's train state: its steps compile in about a second."""
  graphdef, params, model_state = models.split(helpers.tiny_mlp())
  return graphdef, steps.init_train_state(params, model_state, optimizer, seed=0, rule=rule,
                                          ema=ema)


def test_awp_step_applies_the_gradient_at_the_perturbed_weights_to_the_weights():
  gamma, lr, wd = 0.02, 0.1, 0.5  # A large weight decay, to see which weights it acts on.
  optimizer = optim.sgd(optim.learning_rate_schedule("constant", base_lr=lr,
                                                     steps_per_epoch=1, epochs=1),
                        momentum=0.9, weight_decay=wd)
  settings = steps.TrainSettings(method="standard", attack=None)
  graphdef, state = _mlp_state(optimizer, settings.rule)
  awp_settings = steps.TrainSettings(method="standard", attack=None, awp_gamma=gamma,
                                     awp_start_step=1)
  plain = jax.jit(steps.make_train_step(graphdef, optimizer, settings))
  with_awp = jax.jit(steps.make_train_step(graphdef, optimizer, awp_settings))
  batch = _batch()
  # Before its start step AWP does nothing.
  chex.assert_trees_all_equal(with_awp(state, batch)[0].params, plain(state, batch)[0].params)
  # From it on: v_l = γ‖w_l‖ g_l/‖g_l‖ on the matrices, g = ∇L(w); then
  # w ← w − lr·(∇L(w + v) + wd·(w + v)) (a first SGD step: momentum has nothing to carry yet).
  state = state.replace(step=jnp.ones((), jnp.int32))
  x, y = batch["image"], batch["label"]
  loss_grad = jax.jit(jax.grad(lambda p: jnp.mean(-jax.nn.log_softmax(
      models.apply(graphdef, p, state.model_state, x, train=True)[0])[jnp.arange(len(y)), y])))
  w = jax.device_get(state.params)
  v = jax.tree.map(lambda g, w: gamma * np.linalg.norm(w) * g / np.linalg.norm(g)
                   if w.ndim >= 2 else np.zeros_like(w), jax.device_get(loss_grad(w)), w)
  at = jax.tree.map(np.add, w, v)
  expected = jax.tree.map(lambda w, g, a: w - lr * (g + wd * a), w,
                          jax.device_get(loss_grad(at)), at)
  got = jax.device_get(with_awp(state, batch)[0].params)
  chex.assert_trees_all_close(got, expected, atol=1e-6, rtol=1e-5)
  without = jax.device_get(plain(state, batch)[0].params)
  assert not np.allclose(without["head"]["kernel"][...], got["head"]["kernel"][...], atol=1e-6)


def test_weight_average_follows_the_warmed_up_recurrence():
  _, optimizer, settings, _ = _setup("standard")
  decay = 0.2  # Under the warm-up (1 + t)/(10 + t) for t < 2, capped from t = 2 on.
  settings = steps.TrainSettings(method="standard", attack=None, rule=settings.rule,
                                 ema_decay=decay)
  graphdef, state = _mlp_state(optimizer, settings.rule, ema=True)
  step = jax.jit(steps.make_train_step(graphdef, optimizer, settings))
  average = jax.device_get(state.params)
  for d in [1 / 10, 2 / 11, 0.2, 0.2]:
    state, _ = step(state, _batch())
    average = jax.tree.map(lambda e, p: d * e + (1 - d) * p, average,
                           jax.device_get(state.params))
    chex.assert_trees_all_close(jax.device_get(state.ema_params), average, atol=1e-6)
  assert steps.evaluated_params(state) is state.ema_params
  assert not np.allclose(jax.device_get(state.params["head"]["kernel"][...]),
                         average["head"]["kernel"][...], atol=1e-4)
