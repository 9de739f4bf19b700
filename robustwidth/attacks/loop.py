"""The attack loop form, chosen per backend from measurements.

`lax.fori_loop(..., unroll=True)` emits the iterations inline, which on XLA:CPU ran several times
faster than a rolled loop (see `bench/trades_step.py` and docs/benchmarks.md) at the price of a
compile time that grows with the step count. Accelerators keep the rolled loop until measured
otherwise.
"""
import contextlib

import jax

_UNROLL_BY_BACKEND = {"cpu": True}
_forced: list[bool | int] = []


def unroll_attack_loops() -> bool | int:
  if _forced:
    return _forced[-1]
  return _UNROLL_BY_BACKEND.get(jax.default_backend(), False)


@contextlib.contextmanager
def forced_unroll(unroll: bool | int):
  """Attack loops traced inside the block use `unroll` (False: rolled, True: fully unrolled,
  n: n iterations per trip); for benchmarks and for counting FLOPs, since XLA's cost
  analysis counts a loop body once."""
  _forced.append(unroll)
  try:
    yield
  finally:
    _forced.pop()


def attack_loop(num_steps: int, body, init):
  """`body(step, carry) -> carry` run `num_steps` times in this backend's loop form."""
  return jax.lax.fori_loop(0, num_steps, body, init, unroll=unroll_attack_loops())
