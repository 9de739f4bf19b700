"""In-memory image classification splits and the host-sharded batch iterators over them.

Both of the project's data sets fit in host memory (CIFAR-10 train: 150 MB as uint8), so a split
is a pair of arrays; images stay in their stored dtype (uint8 or float32) and are converted to
float32 in [0, 1] per batch.

Training order: epoch e is a permutation drawn from (seed, e) alone, so a resumed run sees the
same batches. Each global batch is cut into `process_count` contiguous slices and a host reads
only its own.
"""
import dataclasses
import functools
import zipfile
from typing import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray   # [N, H, W, C], uint8 (0..255) or float32 in [0, 1]
  labels: np.ndarray   # [N] int32
  num_classes: int

  def __post_init__(self):
    if self.images.ndim != 4:
      raise ValueError(f"images must be [N, H, W, C], got shape {self.images.shape}.")
    if self.labels.shape != (self.images.shape[0],):
      raise ValueError(f"labels must be [N] = [{self.images.shape[0]}], "
                       f"got {self.labels.shape}.")
    if self.images.dtype == np.float32 and self.images.size and not (
        self.images.min() >= 0 and self.images.max() <= 1):  # NaN fails both comparisons.
      raise ValueError("float32 images must lie in [0, 1] (NaN and infinite values are "
                       "refused too).")
    if self.images.dtype not in (np.uint8, np.float32):
      raise ValueError(f"images must be uint8 or float32, got {self.images.dtype}.")
    if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
      raise ValueError(f"labels must lie in [0, {self.num_classes - 1}].")

  def __len__(self) -> int:
    return self.images.shape[0]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])


def first(split: Split, count: int) -> Split:
  """The first `count` examples of `split` (all of them when count is 0)."""
  if count > len(split):
    raise ValueError(f"Asked for the first {count} examples of a split of {len(split)}; "
                     f"lower config.data.train_examples to at most {len(split)}.")
  if not count:
    return split
  return Split(split.images[:count], split.labels[:count], split.num_classes)


def to_float(images: np.ndarray) -> np.ndarray:
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images


def _host_slice(global_batch: int, process_index: int, process_count: int) -> slice:
  if global_batch % process_count:
    raise ValueError(f"The global batch size {global_batch} must be divisible by the number "
                     f"of processes ({process_count}).")
  local = global_batch // process_count
  return slice(process_index * local, (process_index + 1) * local)


def steps_per_epoch(split: Split, global_batch: int) -> int:
  """Training drops the last partial batch (static shapes for jit; the PyTorch reference keeps
  it, a difference of under one batch per epoch)."""
  steps = len(split) // global_batch
  if steps == 0:
    raise ValueError(f"The batch size {global_batch} exceeds the {len(split)} training "
                     "examples; lower train.batch_size.")
  return steps


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


@functools.lru_cache(maxsize=4)
def _stream_permutation(num_examples: int, seed: int, cycle: int) -> np.ndarray:
  return np.random.default_rng([seed, cycle, 1]).permutation(num_examples)


def _extra_rows(num_examples: int, seed: int, step: int, count: int) -> np.ndarray:
  """Rows [step·count, (step + 1)·count) of an endless stream of permutations of the extra
  data: a pure function of the step, so a resumed run draws the same rows."""
  positions = np.arange(step * count, (step + 1) * count)
  cycles, offsets = np.divmod(positions, num_examples)
  return np.array([_stream_permutation(num_examples, seed, int(c))[o]
                   for c, o in zip(cycles, offsets)], dtype=np.int64)


def train_batches(split: Split, *, global_batch: int, seed: int, start_step: int,
                  process_index: int = 0, process_count: int = 1, extra: Split | None = None,
                  extra_per_batch: int = 0) -> Iterator[dict]:
  """This host's part of every training batch from global step `start_step` on, forever.

  With `extra` (e.g. pseudo-labelled images), the last `extra_per_batch` rows of every global
  batch come from it, and epochs count the primary split alone.
  """
  primary = global_batch - extra_per_batch
  per_epoch = steps_per_epoch(split, primary)
  rows = _host_slice(global_batch, process_index, process_count)
  step = start_step
  while True:
    epoch, offset = divmod(step, per_epoch)
    order = epoch_permutation(len(split), seed, epoch)
    for position in range(offset, per_epoch):
      index = order[position * primary:(position + 1) * primary]
      images, labels = to_float(split.images[index]), split.labels[index]
      if extra_per_batch:
        extra_index = _extra_rows(len(extra), seed, epoch * per_epoch + position,
                                  extra_per_batch)
        images = np.concatenate([images, to_float(extra.images[extra_index])])
        labels = np.concatenate([labels, extra.labels[extra_index]])
      yield {"image": images[rows], "label": labels[rows]}
    step = (epoch + 1) * per_epoch


def load_extra(path: str, like: Split) -> Split:
  """Extra training data from an .npz file with `images` [N, H, W, C] (uint8, or float32 in
  [0, 1]) and `labels` [N] matching the primary split's image shape and classes."""
  try:
    with np.load(path) as arrays:
      images, labels = arrays["images"], arrays["labels"].astype(np.int32)
  except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise ValueError(f"config.data.extra_path = {path!r} cannot be read as an .npz file with "
                     f"arrays 'images' and 'labels' ({type(error).__name__}: {error}); it may "
                     "be empty or truncated: write it again with numpy.savez.") from error
  if images.shape[1:] != like.images.shape[1:]:
    raise ValueError(f"The extra images in {path} have shape {images.shape[1:]}, the data set "
                     f"{like.images.shape[1:]}.")
  try:
    return Split(images, labels, like.num_classes)
  except ValueError as error:
    raise ValueError(f"The extra data in {path}: {error}") from error


def eval_batches(split: Split, *, global_batch: int, padded_batch: int | None = None,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """This host's part of the whole split in order, `global_batch` examples a batch, each
  batch padded (mask False) to `padded_batch` rows (default: the last batch only)."""
  padded_batch = padded_batch or global_batch
  rows = _host_slice(padded_batch, process_index, process_count)
  for start in range(0, len(split), global_batch):
    index = np.arange(start, start + padded_batch)[rows]
    valid = index < min(start + global_batch, len(split))
    index = np.where(valid, index, 0)
    yield {"image": to_float(split.images[index]), "label": split.labels[index], "mask": valid}
