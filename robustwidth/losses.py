"""Training losses: cross-entropy, TRADES and PGD-AT in the paper's Eq. 1 form, and MART.

Eq. 1:  L(θ; x, y) + λ · (L(θ; x̂, y) − L(θ; x, y)),  x̂ the inner maximizer.
TRADES replaces the loss difference by KL(f(x) ‖ f(x̂)), so TRADES' β is this λ; λ = 1 with
cross-entropy is Madry's PGD-AT. Per-example forms return [B]; the training losses average.
"""
import jax
import jax.numpy as jnp
import optax


def cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the batch."""
  return jnp.mean(cross_entropy_per_example(logits, labels))


def trades_kl(logits_nat: jax.Array, logits_adv: jax.Array) -> jax.Array:
  """KL(softmax(logits_nat) ‖ softmax(logits_adv)) per example, summed over classes: [B].

  The same quantity as PyTorch's `KLDivLoss(reduction='sum')(log_softmax(adv), softmax(nat))`
  of the TRADES reference, taken per example.
  """
  log_p = jax.nn.log_softmax(logits_nat, axis=-1)
  log_q = jax.nn.log_softmax(logits_adv, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def trades(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array, beta,
           *, stop_gradient_target: bool = False) -> jax.Array:
  """CE(f(x), y) + β · mean KL(f(x) ‖ f(x̂)).

  The reference code lets gradients flow through the clean target of the KL term
  (`stop_gradient_target=False`); True treats softmax(f(x)) as a constant.
  """
  target = jax.lax.stop_gradient(logits_nat) if stop_gradient_target else logits_nat
  return cross_entropy(logits_nat, labels) + beta * jnp.mean(trades_kl(target, logits_adv))


PGD_AT_FORMS = ("difference", "clamped")


def pgd_at_regularizer(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array,
                       form: str = "difference") -> jax.Array:
  """The robust regularizer of Eq. 1 with cross-entropy, averaged over the batch.

  difference: CE(x̂) − CE(x), the paper's Eq. 1.
  clamped: mean over examples of max(CE_i(x̂), CE_i(x)) − CE_i(x), never negative: the form
  of the authors' code (their attacks/pgd.py).
  """
  natural = cross_entropy_per_example(logits_nat, labels)
  adversarial = cross_entropy_per_example(logits_adv, labels)
  if form == "difference":
    return jnp.mean(adversarial) - jnp.mean(natural)
  if form == "clamped":
    return jnp.mean(jnp.maximum(adversarial, natural) - natural)
  raise ValueError(f"Unknown PGD-AT form {form!r}; use one of {PGD_AT_FORMS}.")


def pgd_at(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array, lam,
           form: str = "difference") -> jax.Array:
  """Eq. 1 with cross-entropy: CE(x) + λ · `pgd_at_regularizer`. With the difference form,
  λ = 1 is Madry's PGD-AT, CE(x̂) alone."""
  return (cross_entropy(logits_nat, labels)
          + lam * pgd_at_regularizer(logits_nat, logits_adv, labels, form))


def mart_boosted_cross_entropy(logits_adv: jax.Array, labels: jax.Array) -> jax.Array:
  """MART's boosted cross-entropy on x̂ per example: [B].

  CE(f(x̂), y) − log(1.0001 − p_k(x̂) + 1e-12), k the most probable wrong class under f(x̂);
  the second term pushes the strongest wrong class down. The constants are the reference's.
  """
  probs = jax.nn.softmax(logits_adv, axis=-1)
  true_class = jax.nn.one_hot(labels, logits_adv.shape[-1], dtype=bool)
  top_wrong = jnp.max(jnp.where(true_class, -jnp.inf, probs), axis=-1)
  return cross_entropy_per_example(logits_adv, labels) - jnp.log(1.0001 - top_wrong + 1e-12)


def mart_weighted_kl(logits_nat: jax.Array, logits_adv: jax.Array,
                     labels: jax.Array) -> jax.Array:
  """MART's robust term per example: KL(p(x) ‖ p(x̂)) · (1 − p_y(x)), [B].

  The weight emphasizes misclassified clean examples. As in the reference, log p(x̂) is
  log(p(x̂) + 1e-12), the weight is 1.0000001 − p_y(x), and gradients flow through p(x) in
  both the KL and the weight.
  """
  log_p = jax.nn.log_softmax(logits_nat, axis=-1)
  p = jnp.exp(log_p)
  log_q = jnp.log(jax.nn.softmax(logits_adv, axis=-1) + 1e-12)
  true_prob = jnp.take_along_axis(p, labels[:, None], axis=-1)[:, 0]
  return jnp.sum(p * (log_p - log_q), axis=-1) * (1.0000001 - true_prob)


def mart(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array, lam) -> jax.Array:
  """MART (Wang et al., ICLR 2020): mean BCE(f(x̂), y) + λ · mean KL(p(x) ‖ p(x̂))·(1 − p_y(x));
  the reference's λ is 6."""
  return (jnp.mean(mart_boosted_cross_entropy(logits_adv, labels))
          + lam * jnp.mean(mart_weighted_kl(logits_nat, logits_adv, labels)))
