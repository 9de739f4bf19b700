"""TFDS's prepared array_record data: reading a whole split without TensorFlow, and running a
TFDS builder offline on the official files a user already has.

Reading goes through `builder.as_data_source` (what `tfds.data_source` does), which random
access needs array_record for. Preparing hands the files to TFDS's own builder as manually
downloaded ones, so TFDS checks their sizes and SHA-256 against the official ones and never
goes online; it needs TensorFlow (the `prepare` extra).
"""
import importlib.util
import os
import tempfile

import numpy as np
import tensorflow_datasets as tfds

_READ_BATCH = 1024  # examples per array_record read


class DatasetNotFoundError(FileNotFoundError):
  """A data set is not in the data directory, or not in a form that can be read."""


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """`builder.is_prepared()`, less TFDS's warning about a data directory that never held the
  data set (it warns on every call where the version folder is missing)."""
  return builder.data_path.exists() and builder.is_prepared()


def is_array_record(builder: tfds.core.DatasetBuilder) -> bool:
  return tfds.core.FileFormat.ARRAY_RECORD in builder.info.available_file_formats()


def read_split(builder: tfds.core.DatasetBuilder, split: str,
               fields: dict[str, tuple[tuple[int, ...], type]]) -> dict[str, np.ndarray]:
  """{feature: [N, *shape] array} for the `fields` {feature: (shape, dtype)} of every example
  of a prepared array_record split, in TFDS's stored order."""
  source = builder.as_data_source(split=split)  # what tfds.data_source does, less a 2nd builder
  count = len(source)
  arrays = {name: np.empty((count, *shape), dtype) for name, (shape, dtype) in fields.items()}
  for start in range(0, count, _READ_BATCH):
    keys = list(range(start, min(start + _READ_BATCH, count)))
    for row, example in zip(keys, source.__getitems__(keys)):  # one batched read
      for name, array in arrays.items():
        array[row] = example[name]
  return arrays


def require_tensorflow(name: str) -> None:
  if importlib.util.find_spec("tensorflow") is None:
    raise ImportError(f"Preparing {name} with TFDS needs TensorFlow, which is not installed: "
                      "pip install -e '.[prepare]'")


def prepare_offline(name: str, files: dict[str, str], *, data_dir: str | None = None
                    ) -> tfds.core.DatasetBuilder:
  """Runs TFDS's builder `name` as array_record in `data_dir` on `files`, {the file name TFDS
  registers for a download: its path}; returns the prepared builder. A file that is not the
  official one raises TFDS's NonMatchingChecksumError.
  """
  require_tensorflow(name)
  builder = tfds.builder(name, data_dir=data_dir)
  if is_prepared(builder) and not is_array_record(builder):
    raise ValueError(f"{builder.data_path} already holds {name} as "
                     f"{builder.info.file_format.value}, not array_record; pass another "
                     "--data_dir (or delete that directory).")
  with tempfile.TemporaryDirectory() as scratch:
    manual_dir = os.path.join(scratch, "manual")
    os.mkdir(manual_dir)
    for registered, path in files.items():
      # TFDS looks for each file under its registered name, whatever it is called here.
      os.symlink(os.path.abspath(os.path.expanduser(path)), os.path.join(manual_dir, registered))
    builder.download_and_prepare(
        file_format="array_record",
        download_dir=os.path.join(scratch, "downloads"),  # extracted copies, deleted after
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                     try_download_gcs=False))
  return builder
