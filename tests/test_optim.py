"""Learning-rate schedules against the reference code's per-epoch rules."""
import numpy as np
import pytest

from robustwidth import optim

STEPS_PER_EPOCH = 3


def _per_epoch(schedule, epochs):
  """The rate at every step of epoch e (counted from 1), checked constant within the epoch."""
  rates = np.asarray([float(schedule(s)) for s in range(epochs * STEPS_PER_EPOCH)])
  by_epoch = rates.reshape(epochs, STEPS_PER_EPOCH)
  np.testing.assert_array_equal(by_epoch, by_epoch[:, :1].repeat(STEPS_PER_EPOCH, 1))
  return by_epoch[:, 0]


def test_multistep_decays_from_the_reference_epochs():
  # TRADES' adjust_learning_rate: 0.1 × (0.1 from epoch 75, 0.01 from 90, 0.001 from 100).
  epochs = 101
  expected = [0.1 * (0.001 if e >= 100 else 0.01 if e >= 90 else 0.1 if e >= 75 else 1)
              for e in range(1, epochs + 1)]
  schedule = optim.learning_rate_schedule("multistep", base_lr=0.1,
                                          steps_per_epoch=STEPS_PER_EPOCH, epochs=epochs)
  np.testing.assert_allclose(_per_epoch(schedule, epochs), expected, rtol=1e-6)


@pytest.mark.parametrize("epochs", [100, 80])
def test_halving_halves_from_the_reference_epoch(epochs):
  # The authors' default for 100 epochs: 0.1 × 0.5^(e − 74) from epoch 75 on.
  expected = [0.1 * 0.5 ** max(e - 74, 0) for e in range(1, epochs + 1)]
  schedule = optim.learning_rate_schedule("halving", base_lr=0.1,
                                          steps_per_epoch=STEPS_PER_EPOCH, epochs=epochs,
                                          halving_start=75)
  np.testing.assert_allclose(_per_epoch(schedule, epochs), expected, rtol=1e-6)
