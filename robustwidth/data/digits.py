"""scikit-learn's `load_digits` (1,797 real 8×8 grey-scale digits, shipped inside the wheel):
the embedded default data set, so tests and first runs need no download.

Pixels 0..16 are scaled to [0, 1]. The split is fixed: a stratified 80/20 train/test split
drawn once with seed 0 (1,437 train, 360 test).
"""
import numpy as np

from robustwidth.data.dataset import Split


def load(split: str) -> Split:
  # Imported here: scikit-learn sets OpenMP variables (KMP_*) in os.environ when imported.
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2,
                                         stratify=labels, random_state=0)
  index = {"train": train_idx, "test": test_idx}
  if split not in index:
    raise ValueError(f"The digits data set has splits 'train' and 'test', not {split!r}.")
  return Split(images[index[split]], labels[index[split]], num_classes=10)
