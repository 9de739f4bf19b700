"""The attack loop form: a rolled `lax.fori_loop`, measured against the unrolled one.

With the convolution's CPU derivative forms (models/layers.py) the rolled loop is as fast as
the unrolled one or faster, and its compile time does not grow with the step count
(`python -m bench.trades_step --width 1 --loop rolled|unrolled`, docs/benchmarks.md).
`forced_unroll` remains for benchmarks and for counting FLOPs.
"""
import contextlib

import jax

_forced: list[bool | int] = []


def unroll_attack_loops() -> bool | int:
  """The `unroll` argument attack loops are traced with: rolled unless forced."""
  return _forced[-1] if _forced else False


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
