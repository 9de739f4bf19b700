"""Data sets as in-memory splits, and host-sharded batch iterators over them."""
from robustwidth.data import digits
from robustwidth.data.dataset import (Split, epoch_permutation, eval_batches, first, load_extra,
                                      steps_per_epoch, to_float, train_batches)

DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
# Shapes and sizes, known without loading (for cost estimates): image shape, classes, train
# and test examples.
INFO = {
    "digits": ((8, 8, 1), 10, 1437, 360),
    "fashion_mnist": ((28, 28, 1), 10, 60_000, 10_000),
    "cifar10": ((32, 32, 3), 10, 50_000, 10_000),
    "cifar100": ((32, 32, 3), 100, 50_000, 10_000),
}


def load(name: str, split: str, *, data_dir: str | None = None) -> Split:
  """Loads `split` ("train" or "test") of a named data set."""
  if name == "digits":
    return digits.load(split)
  if name == "fashion_mnist":
    from robustwidth.data import fashion_mnist
    return fashion_mnist.load(split, data_dir=data_dir)
  if name in ("cifar10", "cifar100"):
    from robustwidth.data import cifar  # TFDS is imported only when CIFAR is asked for.
    return cifar.load(name, split, data_dir=data_dir)
  raise ValueError(f"Unknown data set {name!r}; use one of {DATASETS}.")


__all__ = ["DATASETS", "INFO", "Split", "epoch_permutation", "eval_batches", "first", "load",
           "load_extra", "steps_per_epoch", "to_float", "train_batches"]
