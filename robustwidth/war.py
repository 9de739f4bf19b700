"""Width Adjusted Regularization (WAR): how the robust-regularization weight λ (TRADES β)
should grow with width (docs/paper.md §4).

Rules (each run records `beta_rule`, the rule and its parameters, from `describe`):
  fixed     λ = λ₀ at every width (plain TRADES).
  static    λ(k) = λ₀ · (k / k₀)^γ for width k and reference width k₀.
  adaptive  the thin reference run (width k₀, λ₀) records r₀ = λ₀ · E[R_rob] / E[L_nat]; the
            wide run sets λ_t = clip(r₀ · L̄_nat / R̄_rob, λ₀, λ_max), where L̄ and R̄ are
            bias-corrected exponential moving averages of the per-step natural loss and
            robust regularization term, so that its ratio λ·R̄/L̄ tracks r₀. λ never falls below
            λ₀ (only enlarging) and never exceeds λ_max.

Every rule also accumulates Σ λ_t·R_t and Σ L_t, so each run reports its own ratio r, which
is the r₀ a later adaptive run can be given.
"""
import dataclasses

import flax
import jax.numpy as jnp

RULES = ("fixed", "static", "adaptive")


@flax.struct.dataclass
class WarState:
  beta: jnp.ndarray            # the λ in use at the next step
  natural_ema: jnp.ndarray     # EMA of the natural loss (not bias-corrected)
  robust_ema: jnp.ndarray      # EMA of the robust regularization term
  updates: jnp.ndarray         # number of updates so far (for bias correction)
  weighted_robust_sum: jnp.ndarray  # Σ λ_t · R_t
  natural_sum: jnp.ndarray          # Σ L_t


def static_beta(beta0: float, width: float, reference_width: float, gamma: float) -> float:
  """λ(k) = λ₀ · (k / k₀)^γ."""
  return beta0 * (width / reference_width) ** gamma


@dataclasses.dataclass(frozen=True)
class Rule:
  """A WAR rule's static settings; `init` and `update` are pure."""
  name: str = "fixed"
  beta0: float = 6.0
  width: float = 1.0
  reference_width: float = 1.0
  gamma: float = 0.0
  reference_ratio: float = 0.0
  beta_max: float = 100.0
  ema_decay: float = 0.99

  def __post_init__(self):
    if self.name not in RULES:
      raise ValueError(f"Unknown WAR rule {self.name!r}; use one of {RULES}.")
    if self.beta0 < 0:
      raise ValueError(f"war beta0 must be >= 0, got {self.beta0}.")
    if self.width <= 0 or self.reference_width <= 0:
      raise ValueError("war width and reference_width must be > 0, got "
                       f"{self.width} and {self.reference_width}.")
    if self.name == "adaptive":
      if self.reference_ratio <= 0:
        raise ValueError("The adaptive WAR rule needs reference_ratio > 0 (the ratio r a thin "
                         "reference run records as 'war_ratio'), or reference_run, that "
                         "run's workdir.")
      if self.beta_max < self.beta0:
        raise ValueError(f"war beta_max ({self.beta_max}) must be >= beta0 ({self.beta0}).")
      if not 0 <= self.ema_decay < 1:
        raise ValueError(f"war ema_decay must lie in [0, 1), got {self.ema_decay}.")

  def initial_beta(self) -> float:
    if self.name == "static":
      return static_beta(self.beta0, self.width, self.reference_width, self.gamma)
    return self.beta0

  def describe(self) -> str:
    if self.name == "fixed":
      return f"fixed(beta={self.beta0:g})"
    if self.name == "static":
      return (f"static(beta0={self.beta0:g}, k0={self.reference_width:g}, "
              f"gamma={self.gamma:g})")
    return (f"adaptive(beta0={self.beta0:g}, r0={self.reference_ratio:.4g}, "
            f"beta_max={self.beta_max:g}, ema={self.ema_decay:g})")

  def init(self) -> WarState:
    # Distinct arrays, not one shared zero: a donated train state must not alias buffers.
    zero = lambda: jnp.zeros((), jnp.float32)
    return WarState(beta=jnp.asarray(self.initial_beta(), jnp.float32), natural_ema=zero(),
                    robust_ema=zero(), updates=jnp.zeros((), jnp.int32),
                    weighted_robust_sum=zero(), natural_sum=zero())

  def update(self, state: WarState, natural_loss, robust_term) -> WarState:
    """Folds in one step's mean natural loss and robust term; returns the next λ."""
    d = self.ema_decay
    natural_ema = d * state.natural_ema + (1 - d) * natural_loss
    robust_ema = d * state.robust_ema + (1 - d) * robust_term
    updates = state.updates + 1
    beta = state.beta
    if self.name == "adaptive":
      correction = 1 - d ** updates.astype(jnp.float32)
      target = (self.reference_ratio * (natural_ema / correction)
                / jnp.maximum(robust_ema / correction, 1e-12))
      beta = jnp.clip(target, self.beta0, self.beta_max).astype(jnp.float32)
    return WarState(beta=beta, natural_ema=natural_ema, robust_ema=robust_ema, updates=updates,
                    weighted_robust_sum=state.weighted_robust_sum + state.beta * robust_term,
                    natural_sum=state.natural_sum + natural_loss)


def measured_ratio(state: WarState) -> float:
  """The run's r = Σ λ_t·R_t / Σ L_t (the r₀ an adaptive run tracks)."""
  return float(state.weighted_robust_sum / jnp.maximum(state.natural_sum, 1e-12))
