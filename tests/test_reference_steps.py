"""The TRADES, PGD-AT and MART training steps against PyTorch implementations of the reference
algorithms, written here from the references' description (yaodongyu/TRADES `trades_loss`;
Madry et al.'s PGD-AT as the authors' and TRADES' code runs its attack; YisenWang/MART
`mart_loss`): the same WideResNet weights moved through `interop`, the same batches and attack
starts, three consecutive steps.

Each reference step: the model in evaluation mode for the attack, which starts at the given
point (x + 0.001·N(0, 1) or x + U(−ε, ε), not clipped), takes the sign of the input gradient,
and projects onto the ε-ball and [0, 1] after every step; then the model in training mode for
the loss — TRADES: CE(f(x)) + β·KL(softmax f(x) ‖ softmax f(x̂)) with f(x) run a second time
inside the KL (three training-mode passes: clean, adversarial, clean); Madry: CE(f(x̂)) alone
(one pass); MART: clean, then adversarial pass, CE(f(x̂)) − log(1.0001 − p_k(x̂) + 1e-12) with
k the top-2 class of p(x̂) that is not y, plus β·mean of KL(p(x) ‖ p(x̂)) (log of p(x̂) + 1e-12)
times 1.0000001 − p_y(x) — and PyTorch's SGD with momentum and coupled weight decay.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flax import nnx  # noqa: E402

from robustwidth import attacks, interop, models, optim, steps, war  # noqa: E402
from robustwidth.attacks import geometry  # noqa: E402
from tests import helpers  # noqa: E402

EPS, STEP_SIZE, NUM_STEPS, BATCH = 0.031, 0.007, 10, 16
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 2e-4

# Tolerances (float32). The two frameworks sum convolutions in different orders, so logits
# and gradients agree to a few float32 ulps (relative ~1e-6), not bit for bit.
# Training step: three SGD steps of lr 0.1 move the weights by ~1e-2; a relative gradient
# error of ~1e-5 leaves parameter differences of ~1e-7-1e-6, and the running statistics,
# averages of activations of order 1, differ by as much. ATOL = 2e-5 is well above what we
# measured (docs/reference_check.md) and far below any real difference: a missed or extra
# BatchNorm update or the biased variance moves the statistics by 1e-3-1e-1, a wrong loss
# term or weight decay the parameters by >1e-4.
# Attack: iterates are sums of ±0.007 steps clipped to the ball and the box, so they agree
# exactly except where a gradient coordinate is so near 0 that rounding flips its sign (the
# pixel then differs by a multiple of 0.014). TRADES' first KL gradient, at x + 0.001·N(0, 1),
# is ~1e-8, the difference of two nearly equal softmaxes: rounding flips ~1% of its signs and
# 0.3-4% of the pixels differed after 10 steps in our runs; we allow 8%, where the start
# clipped to [0, 1] first changes 14-26% of them and BatchNorm in training mode inside the
# attack ~65%. The CE gradient at a uniform start is no such difference: no pixel differed in
# our runs; we allow 0.2%, where the clipped start changes 1.3-2.2%.
# Each training step therefore takes the same adversarial batch on both sides (ours), so the
# parameter comparison measures the step itself, not the attack's sign flips.
ATOL, RTOL = 2e-5, 1e-5


def _nchw(x):
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def _nhwc(x):
  return x.detach().numpy().transpose(0, 2, 3, 1)


def _torch_attack(net, x, y, start, loss):
  """Sign-gradient ascent from `start` (used as given, outside [0, 1] or not), projected onto
  the ε-ball, then clipped to [0, 1], after each step; the model in evaluation mode."""
  net.eval()
  with torch.no_grad():
    target = F.softmax(net(x), dim=1)
  x_adv = start.clone()
  for _ in range(NUM_STEPS):
    x_adv.requires_grad_(True)
    logits = net(x_adv)
    if loss == "kl":
      objective = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
    else:
      objective = F.cross_entropy(logits, y)
    grad, = torch.autograd.grad(objective, [x_adv])
    x_adv = x_adv.detach() + STEP_SIZE * grad.sign()
    x_adv = torch.clamp(torch.min(torch.max(x_adv, x - EPS), x + EPS), 0.0, 1.0)
  return x_adv


def _torch_step(net, optimizer, x, y, x_adv, method, beta):
  """One reference training step on the adversarial batch `x_adv`."""
  net.train()
  optimizer.zero_grad()
  if method == "trades":
    logits = net(x)
    natural = F.cross_entropy(logits, y)
    robust = F.kl_div(F.log_softmax(net(x_adv), dim=1), F.softmax(net(x), dim=1),
                      reduction="sum") / len(x)
    loss = natural + beta * robust
  elif method == "mart":
    logits, logits_adv = net(x), net(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    top_two = torch.topk(adv_probs, 2, dim=1).indices
    wrong = torch.where(top_two[:, 0] == y, top_two[:, 1], top_two[:, 0])
    boosted = F.cross_entropy(logits_adv, y) - torch.log(
        1.0001 - adv_probs.gather(1, wrong[:, None])[:, 0] + 1e-12).mean()
    nat_probs = F.softmax(logits, dim=1)
    kl = (nat_probs * (torch.log(nat_probs) - torch.log(adv_probs + 1e-12))).sum(dim=1)
    weight = 1.0000001 - nat_probs.gather(1, y[:, None])[:, 0]
    loss = boosted + beta * (kl * weight).mean()
  else:
    loss = F.cross_entropy(net(x_adv), y)
  loss.backward()
  optimizer.step()


def _attack_key(state):
  """The key the train step gives its attack: fold_in(key, step), split, the second half."""
  return jax.random.split(jax.random.fold_in(state.key, state.step))[1]


def _attack_start(key, x, init):
  """The attack's start for `key` (restart 0), handed to the PyTorch attack so that both
  begin at the same point."""
  return geometry.random_start(jax.random.fold_in(key, 0), x, EPS, "linf", init)


def _max_difference(ours, theirs, suffixes):
  return max(float(np.max(np.abs(ours[k].numpy() - theirs[k].numpy())))
             for k in theirs if k.endswith(suffixes))


@pytest.mark.parametrize("method,init,beta,flipped_fraction", [
    ("trades", "normal", 6.0, 0.08), ("pgd_at", "uniform", 1.0, 0.002),
    ("mart", "normal", 6.0, 0.002)])
def test_three_steps_match_the_reference(method, init, beta, flipped_fraction):
  # WRN-10, stage channels [4, 8, 16, 32], 8×8×3 inputs, BatchNorm statistics away from their
  # defaults (so the attack's evaluation mode differs from training mode).
  net = helpers.torch_wide_resnet(10, 2, 4, 3)
  model = interop.from_torch_state_dict(net.state_dict())
  graphdef, params, model_state = models.split(model)
  torch_optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM,
                                    weight_decay=WEIGHT_DECAY)
  optimizer = optim.sgd(optim.learning_rate_schedule("constant", base_lr=LR, steps_per_epoch=1,
                                                     epochs=1),
                        momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  attack = steps.AttackSettings(eps=EPS, step_size=STEP_SIZE, num_steps=NUM_STEPS,
                                loss="kl" if method == "trades" else "ce", init=init)
  rule = war.Rule(beta0=beta)
  settings = steps.TrainSettings(method=method, attack=attack, rule=rule)
  state = steps.init_train_state(params, model_state, optimizer, seed=0, rule=rule)
  train_step = jax.jit(steps.make_train_step(graphdef, optimizer, settings))
  attack_fn = jax.jit(lambda p, s, x, y, key: attacks.pgd(
      models.logits_fn(graphdef, p, s), x, y, key=key, **attack.kwargs()))

  figures = []
  for i in range(3):
    x, y = helpers.images(10 + i, BATCH, (8, 8, 3)), helpers.labels(10 + i, BATCH)
    key = _attack_key(state)
    start = _attack_start(key, x, init)
    assert float(jnp.max(start)) > 1.0 and float(jnp.min(start)) < 0.0  # Saturated pixels.
    x_adv = np.asarray(attack_fn(state.params, state.model_state, x, y, key))
    state, _ = train_step(state, {"image": x, "label": y})
    x_t, y_t = _nchw(x), torch.from_numpy(np.array(y)).long()
    torch_x_adv = _nhwc(_torch_attack(net, x_t, y_t, _nchw(start),
                                      "kl" if method == "trades" else "ce"))
    _torch_step(net, torch_optimizer, x_t, y_t, _nchw(x_adv), method, beta)

    flipped = np.abs(x_adv - torch_x_adv) > 1e-6
    assert flipped.mean() <= flipped_fraction, f"step {i}: {flipped.mean():.2%} pixels differ"
    ours = interop.to_torch_state_dict(nnx.merge(graphdef, state.params, state.model_state))
    theirs = net.state_dict()
    for key, value in theirs.items():
      if key.endswith("num_batches_tracked"):
        continue
      np.testing.assert_allclose(ours[key].numpy(), value.numpy(), rtol=RTOL, atol=ATOL,
                                 err_msg=f"step {i}: {key}")
    figures.append((i + 1, float(np.max(np.abs(x_adv - torch_x_adv))), float(flipped.mean()),
                    _max_difference(ours, theirs, ("weight", "bias")),
                    _max_difference(ours, theirs, ("running_mean",)),
                    _max_difference(ours, theirs, ("running_var",))))
  for figure in figures:  # For docs/reference_check.md (pytest -s).
    print(f"{method} step {figure[0]}: x_adv {figure[1]:.2e} (pixels differing {figure[2]:.2%})"
          f", parameters {figure[3]:.2e}, running_mean {figure[4]:.2e}, "
          f"running_var {figure[5]:.2e}")
