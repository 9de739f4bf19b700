"""CIFAR-10 / CIFAR-100 read from TFDS's prepared array_record data, and that preparation.

Reading needs no TensorFlow: the whole split is decoded once into uint8 arrays, in the official
archive's order (TFDS stores examples shuffled by key; each example's "id" holds its index).
Preparing runs TFDS's own `cifar10` / `cifar100` builders on the official binary archive, handed
to them as a manually downloaded file; that step needs TensorFlow (the `prepare` extra).
"""
import contextlib
import importlib.util
import os
import tempfile
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from robustwidth.data.dataset import Split

# The archive each TFDS builder reads, under the file name TFDS registers for it.
ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}
_ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/"
_HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
_SPLITS = ("train", "test")
_READ_BATCH = 1024  # examples per array_record read


class DatasetNotFoundError(FileNotFoundError):
  """A CIFAR data set has not been prepared in the data directory."""


class DatasetCorruptError(ValueError):
  """A prepared CIFAR data set whose files cannot be read."""


def prepare_command(name: str, data_dir: str | None = None) -> str:
  command = f"python -m launch.prepare_data {name} --archive PATH/{ARCHIVES[name]}"
  return command + (f" --data_dir {data_dir}" if data_dir else "")


def _check_name(name: str) -> None:
  if name not in ARCHIVES:
    raise ValueError(f"Unknown CIFAR data set {name!r}; use one of {tuple(ARCHIVES)}.")


def _is_array_record(builder: tfds.core.DatasetBuilder) -> bool:
  return tfds.core.FileFormat.ARRAY_RECORD in builder.info.available_file_formats()


def load(name: str, split: str, *, data_dir: str | None = None) -> Split:
  """Loads `split` ("train" or "test") of `name` from `data_dir` (TFDS's default when None:
  $TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  _check_name(name)
  if split not in _SPLITS:
    raise ValueError(f"The {name} data set has splits {_SPLITS}, not {split!r}.")
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise DatasetNotFoundError(
        f"{name} is not prepared in {builder.data_path}. Download the binary version "
        f"({ARCHIVES[name]}) from {_HOMEPAGE}, then run (it needs pip install -e '.[prepare]'):\n"
        f"  {prepare_command(name, data_dir)}")
  if not _is_array_record(builder):
    raise DatasetNotFoundError(
        f"{builder.data_path} holds {name} as {builder.info.file_format.value} (written by "
        "tfds.load?), which allows no random access. Prepare it as array_record in another "
        f"directory:\n  {prepare_command(name, 'OTHER_DIR')}")
  source = builder.as_data_source(split=split)  # what tfds.data_source does, less a 2nd builder
  count = len(source)
  images = np.empty((count, 32, 32, 3), np.uint8)
  labels = np.empty(count, np.int32)
  index = np.empty(count, np.int64)
  prefix = len(split) + 1  # ids are "train_00042", "test_00007"
  try:
    for start in range(0, count, _READ_BATCH):
      keys = list(range(start, min(start + _READ_BATCH, count)))
      for row, example in zip(keys, source.__getitems__(keys)):  # one batched read
        images[row] = example["image"]
        labels[row] = example["label"]
        index[row] = int(example["id"][prefix:])
  except Exception as error:  # array_record and the decoders raise many types.
    raise DatasetCorruptError(
        f"Reading the {split} split of {name} from {builder.data_path} failed "
        f"({type(error).__name__}: {error}): its files are damaged. Prepare it again in a new "
        f"directory:\n  {prepare_command(name, 'NEW_DIR')}") from error
  order = np.argsort(index)
  return Split(images[order], labels[order], num_classes=_NUM_CLASSES[name])


def prepare(name: str, archive: str, *, data_dir: str | None = None,
            verify_checksum: bool = True) -> tuple[str, dict[str, int]]:
  """Builds `name` as array_record data in `data_dir` from the official binary archive at
  `archive`; returns the data's directory and the number of examples per split.

  The archive reaches TFDS's builder through a manual-download directory, so TFDS checks its size
  and SHA-256 against the official ones and never goes online. `verify_checksum=False` makes TFDS
  accept the archive as it is: only for archives generated in the same format (tests).
  """
  _check_name(name)
  if importlib.util.find_spec("tensorflow") is None:
    raise ImportError("Preparing CIFAR from the archive needs TensorFlow, which is not installed: "
                      "pip install -e '.[prepare]'")
  archive = os.path.abspath(os.path.expanduser(archive))
  if not os.path.isfile(archive):
    raise FileNotFoundError(f"No archive at {archive}; download {ARCHIVES[name]} (the binary "
                            f"version) from {_HOMEPAGE}.")
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared() and not _is_array_record(builder):
    raise ValueError(f"{builder.data_path} already holds {name} as "
                     f"{builder.info.file_format.value}, not array_record; pass another "
                     "--data_dir (or delete that directory).")
  with tempfile.TemporaryDirectory() as scratch:
    manual_dir = os.path.join(scratch, "manual")
    os.mkdir(manual_dir)
    # TFDS looks for the file under its registered name, whatever the archive is called.
    link = os.path.join(manual_dir, ARCHIVES[name])
    os.symlink(archive, link)
    expect_this_archive = contextlib.nullcontext()
    if not verify_checksum:
      url_infos = {_ARCHIVE_URL + ARCHIVES[name]: tfds.download.checksums.compute_url_info(link)}
      expect_this_archive = mock.patch.object(type(builder), "url_infos", url_infos)
    try:
      with expect_this_archive:
        builder.download_and_prepare(
            file_format="array_record",
            download_dir=os.path.join(scratch, "downloads"),  # the extracted copy, deleted after
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                         try_download_gcs=False))
    except NonMatchingChecksumError as error:
      raise ValueError(
          f"{archive} is not the official {ARCHIVES[name]} (size or SHA-256 differ); download it "
          f"again from {_HOMEPAGE}. Skip this check only for an archive generated in the same "
          f"format (verify_checksum=False, --skip_checksum).\n{error}") from error
  counts = {split: builder.info.splits[split].num_examples for split in _SPLITS}
  return str(builder.data_path), counts
