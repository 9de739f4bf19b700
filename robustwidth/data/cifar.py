"""CIFAR-10 / CIFAR-100 read from TFDS's prepared array_record data, and that preparation.

Reading needs no TensorFlow: the whole split is decoded once into uint8 arrays, in the official
archive's order (TFDS stores examples shuffled by key; each example's "id" holds its index).
Preparing runs TFDS's own `cifar10` / `cifar100` builders on the official binary archive, handed
to them as a manually downloaded file (`tfds_files.prepare_offline`); that step needs
TensorFlow (the `prepare` extra).
"""
import os

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from robustwidth.data import tfds_files
from robustwidth.data.dataset import Split
from robustwidth.data.tfds_files import DatasetNotFoundError

# The archive each TFDS builder reads, under the file name TFDS registers for it.
ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}
_HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
_SPLITS = ("train", "test")


class DatasetCorruptError(ValueError):
  """A prepared CIFAR data set whose files cannot be read."""


def prepare_command(name: str, data_dir: str | None = None) -> str:
  command = f"python -m launch.prepare_data {name} --archive PATH/{ARCHIVES[name]}"
  return command + (f" --data_dir {data_dir}" if data_dir else "")


def _check_name(name: str) -> None:
  if name not in ARCHIVES:
    raise ValueError(f"Unknown CIFAR data set {name!r}; use one of {tuple(ARCHIVES)}.")


def load(name: str, split: str, *, data_dir: str | None = None) -> Split:
  """Loads `split` ("train" or "test") of `name` from `data_dir` (TFDS's default when None:
  $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  _check_name(name)
  if split not in _SPLITS:
    raise ValueError(f"The {name} data set has splits {_SPLITS}, not {split!r}.")
  builder = tfds.builder(name, data_dir=data_dir)
  if not tfds_files.is_prepared(builder):
    raise DatasetNotFoundError(
        f"{name} is not prepared in {builder.data_path}. Download the binary version "
        f"({ARCHIVES[name]}) from {_HOMEPAGE}, then run (it needs pip install -e '.[prepare]'):\n"
        f"  {prepare_command(name, data_dir)}")
  if not tfds_files.is_array_record(builder):
    raise DatasetNotFoundError(
        f"{builder.data_path} holds {name} as {builder.info.file_format.value} (written by "
        "tfds.load?), which allows no random access. Prepare it as array_record in another "
        f"directory:\n  {prepare_command(name, 'OTHER_DIR')}")
  try:
    arrays = tfds_files.read_split(builder, split, {"image": ((32, 32, 3), np.uint8),
                                                    "label": ((), np.int32), "id": ((), object)})
  except Exception as error:  # array_record and the decoders raise many types.
    raise DatasetCorruptError(
        f"Reading the {split} split of {name} from {builder.data_path} failed "
        f"({type(error).__name__}: {error}): its files are damaged. Prepare it again in a new "
        f"directory:\n  {prepare_command(name, 'NEW_DIR')}") from error
  prefix = len(split) + 1  # ids are "train_00042", "test_00007"
  index = np.array([int(i[prefix:]) for i in arrays["id"]])
  order = np.argsort(index)
  return Split(arrays["image"][order], arrays["label"][order], num_classes=_NUM_CLASSES[name])


def prepare(name: str, archive: str, *, data_dir: str | None = None
            ) -> tuple[str, dict[str, int]]:
  """Builds `name` as array_record data in `data_dir` from the official binary archive at
  `archive`; returns the data's directory and the number of examples per split."""
  _check_name(name)
  tfds_files.require_tensorflow(name)
  archive = os.path.abspath(os.path.expanduser(archive))
  if not os.path.isfile(archive):
    raise FileNotFoundError(f"No archive at {archive}; download {ARCHIVES[name]} (the binary "
                            f"version) from {_HOMEPAGE}.")
  try:
    builder = tfds_files.prepare_offline(name, {ARCHIVES[name]: archive}, data_dir=data_dir)
  except NonMatchingChecksumError as error:
    raise ValueError(
        f"{archive} is not the official {ARCHIVES[name]} (size or SHA-256 differ); download it "
        f"again from {_HOMEPAGE}.\n{error}") from error
  counts = {split: builder.info.splits[split].num_examples for split in _SPLITS}
  return str(builder.data_path), counts
