"""Fashion-MNIST (Xiao et al. 2017): 60,000 train and 10,000 test 28×28 grey-scale images of
clothing, 10 classes, read from one of two sources, in this order:

  1. TFDS's prepared `fashion_mnist` (array_record) in `data_dir` (TFDS's default directory
     when None), what `tfds.builder("fashion_mnist").download_and_prepare(file_format=
     "array_record")` writes;
  2. the four official IDX files (`train-images-idx3-ubyte.gz`, ...) in `data_dir`, by default
     the Debian package's directory (`apt-get install dataset-fashion-mnist`).

Both give the official order. The IDX headers (magic number, counts, 28×28) are checked against
each other and the data's length, so a truncated or foreign file stops the run.
TFDS stores examples sorted by the MD5 hash of (split name, index) (tfds.core.hashing: its
shuffle); hashing every index recovers the official order.
"""
import gzip
import os
import zlib

import numpy as np

from robustwidth.data.dataset import Split

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # where the package puts the IDX files
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_MAGIC, LABEL_MAGIC = 0x803, 0x801  # unsigned bytes; 3 dimensions, 1 dimension
SIZE = 28
NUM_CLASSES = 10


class DataError(ValueError):
  """A Fashion-MNIST file that is not what it should be."""


def how_to_get(data_dir: str | None) -> str:
  idx_dir = data_dir or DEBIAN_DIR
  tfds_dir = f", data_dir={data_dir!r}" if data_dir else ""
  return ("Get Fashion-MNIST either way:\n"
          f"  - the official IDX files in {idx_dir}: on Debian/Ubuntu, as root, "
          f"`apt-get update && apt-get install {DEBIAN_PACKAGE}` (it fills "
          f"{DEBIAN_DIR}), or download the four .gz files from "
          "https://github.com/zalandoresearch/fashion-mnist into data.data_dir;\n"
          "  - with internet, TFDS: python -c \"import tensorflow_datasets as tfds; "
          f"tfds.builder('fashion_mnist'{tfds_dir}).download_and_prepare("
          "file_format='array_record')\"")


def _read_idx(path: str, magic: int, dims: int) -> np.ndarray:
  """The uint8 array of one IDX file, its header checked against its length."""
  try:
    with gzip.open(path, "rb") as f:
      content = f.read()
  except (OSError, EOFError, zlib.error) as error:
    raise DataError(f"{path} is not a readable .gz file ({error}).") from error
  header = 4 + 4 * dims
  found = int.from_bytes(content[:4], "big") if len(content) >= 4 else None
  if found != magic:
    raise DataError(f"{path} starts with magic number {found!r}, not {magic:#06x}: it is not "
                    f"an IDX file of {dims}-dimensional unsigned bytes.")
  shape = tuple(int(d) for d in np.frombuffer(content[4:header], ">u4"))
  if len(content) != header + int(np.prod(shape)):
    raise DataError(f"{path} holds {len(content) - header} bytes of data; its header "
                    f"{shape} says {int(np.prod(shape))} (truncated?).")
  return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


def load_idx(split: str, directory: str) -> Split:
  """`split` from the official IDX files in `directory`."""
  image_path, label_path = (os.path.join(directory, name) for name in FILES[split])
  missing = [path for path in (image_path, label_path) if not os.path.isfile(path)]
  if missing:
    raise FileNotFoundError(f"No Fashion-MNIST file {' or '.join(missing)}.")
  images = _read_idx(image_path, IMAGE_MAGIC, 3)
  labels = _read_idx(label_path, LABEL_MAGIC, 1)
  if images.shape[1:] != (SIZE, SIZE):
    raise DataError(f"{image_path} holds {images.shape[1:]} images, not {SIZE}×{SIZE}.")
  if len(labels) != len(images):
    raise DataError(f"{image_path} holds {len(images)} images but {label_path} "
                    f"{len(labels)} labels.")
  if labels.size and labels.max() >= NUM_CLASSES:
    raise DataError(f"{label_path} holds label {labels.max()}; classes are 0..9.")
  return Split(images[..., None].copy(), labels.astype(np.int32), num_classes=NUM_CLASSES)


def _official_order(split: str, count: int) -> np.ndarray:
  """The official index of each example in TFDS's stored order."""
  from tensorflow_datasets.core import hashing
  hasher = hashing.Hasher(split)
  return np.array(sorted(range(count), key=hasher.hash_key), np.int64)


def load_tfds(split: str, builder) -> Split:
  from robustwidth.data import tfds_files
  arrays = tfds_files.read_split(builder, split, {"image": ((SIZE, SIZE, 1), np.uint8),
                                                  "label": ((), np.int32)})
  index = _official_order(split, len(arrays["label"]))
  images, labels = np.empty_like(arrays["image"]), np.empty_like(arrays["label"])
  images[index], labels[index] = arrays["image"], arrays["label"]
  return Split(images, labels, num_classes=NUM_CLASSES)


def load(split: str, *, data_dir: str | None = None) -> Split:
  """`split` ("train" or "test") from the first source of the module docstring that holds it."""
  import tensorflow_datasets as tfds  # imported only when Fashion-MNIST is asked for
  from robustwidth.data import tfds_files
  if split not in FILES:
    raise ValueError(f"The fashion_mnist data set has splits {tuple(FILES)}, not {split!r}.")
  builder = tfds.builder("fashion_mnist", data_dir=data_dir)
  prepared = tfds_files.is_prepared(builder)
  if prepared and tfds_files.is_array_record(builder):
    return load_tfds(split, builder)
  idx_dir = data_dir or DEBIAN_DIR
  try:
    return load_idx(split, idx_dir)
  except FileNotFoundError as error:
    tfds_note = (f"TFDS's copy in {builder.data_path} is {builder.info.file_format.value}, "
                 "which allows no random access (prepare it as array_record)" if prepared
                 else f"TFDS's fashion_mnist is not prepared in {builder.data_path} either")
    raise tfds_files.DatasetNotFoundError(f"{error} {tfds_note}.\n{how_to_get(data_dir)}"
                                          ) from None
  except DataError as error:
    raise DataError(f"{error}\n{how_to_get(data_dir)}") from None
