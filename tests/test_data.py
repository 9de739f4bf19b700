"""Data: CIFAR archives through prepare_data and the TFDS reader, the host-sharded iterators, and
the crop/flip augmentation."""
import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robustwidth import data
from robustwidth.data import augment, cifar, fashion_mnist
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tensorflow = helpers.needs_tensorflow

# Python prelude that makes TensorFlow look uninstalled, for code run in a subprocess.
WITHOUT_TENSORFLOW = """
import importlib.machinery
_find_spec = importlib.machinery.PathFinder.find_spec
importlib.machinery.PathFinder.find_spec = staticmethod(
    lambda name, path=None, target=None:
    None if name.split(".")[0] == "tensorflow" else _find_spec(name, path, target))
"""

# --- CIFAR --------------------------------------------------------------------------------------

@needs_tensorflow
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_prepared_archive_loads_exactly(name, tmp_path):
  data_dir, written = helpers.prepare_cifar(name, tmp_path)
  for split in ("train", "test"):
    loaded = data.load(name, split, data_dir=data_dir)
    images, labels = written[split]
    assert loaded.images.dtype == np.uint8 and loaded.labels.dtype == np.int32
    assert loaded.num_classes == (10 if name == "cifar10" else 100)
    np.testing.assert_array_equal(loaded.images, images)  # NHWC, in the archive's order
    np.testing.assert_array_equal(loaded.labels, labels)  # CIFAR-100: the fine label

  if name == "cifar10":  # Reading needs no TensorFlow.
    script = WITHOUT_TENSORFLOW + f"""
import sys
from robustwidth import data
split = data.load("cifar10", "test", data_dir={data_dir!r})
assert "tensorflow" not in sys.modules
print(split.images.sum(dtype="int64"), split.labels.sum())
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    images, labels = written["test"]
    assert result.stdout.split() == [str(images.sum(dtype=np.int64)), str(labels.sum())]

    # The same data recorded as tfrecord (as tfds.load leaves it) is refused with the way out.
    tfrecord_dir = str(tmp_path / "tfrecord")
    shutil.copytree(data_dir, tfrecord_dir)
    info_path = os.path.join(tfrecord_dir, "cifar10", "3.0.2", "dataset_info.json")
    with open(info_path) as f:
      info = json.load(f)
    with open(info_path, "w") as f:
      json.dump({**info, "fileFormat": "tfrecord"}, f)
    with pytest.raises(cifar.DatasetNotFoundError, match="holds cifar10 as tfrecord"):
      data.load(name, "train", data_dir=tfrecord_dir)
    with pytest.raises(ValueError, match="pass another --data_dir"):
      cifar.prepare(name, str(tmp_path / f"{name}-generated.tar.gz"), data_dir=tfrecord_dir)

    # A damaged shard names the data and the way out, instead of array_record's exception.
    damaged_dir = str(tmp_path / "damaged")
    shutil.copytree(data_dir, damaged_dir)
    shard = next(p for p in pathlib.Path(damaged_dir).rglob("*test.array_record*"))
    content = bytearray(shard.read_bytes())
    content[len(content) // 4:] = b"\xff" * (len(content) - len(content) // 4)
    shard.write_bytes(bytes(content))
    with pytest.raises(cifar.DatasetCorruptError, match="files are damaged. Prepare it again"):
      data.load(name, "test", data_dir=damaged_dir)


@needs_tensorflow
def test_prepare_rejects_an_archive_that_is_not_the_official_one(tmp_path):
  archive = tmp_path / "cifar-10-binary.tar.gz"
  helpers.write_cifar_archive(archive, "cifar10", np.random.default_rng(0))
  with pytest.raises(ValueError, match="not the official cifar-10-binary.tar.gz"):
    cifar.prepare("cifar10", str(archive), data_dir=str(tmp_path / "tfds"))


def test_prepare_data_without_tensorflow_names_the_extra(tmp_path):
  script = WITHOUT_TENSORFLOW + f"""
import runpy, sys
sys.argv = ["prepare_data", "cifar10", "--archive", {str(tmp_path / "a.tar.gz")!r}]
runpy.run_module("launch.prepare_data", run_name="__main__")
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 1
  assert "needs TensorFlow" in result.stderr and "pip install -e '.[prepare]'" in result.stderr


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_names_the_prepare_command(name, tmp_path):
  with pytest.raises(cifar.DatasetNotFoundError) as raised:
    data.load(name, "train", data_dir=str(tmp_path))
  assert isinstance(raised.value, FileNotFoundError)
  message = str(raised.value)
  archive = cifar.ARCHIVES[name]
  assert (f"python -m launch.prepare_data {name} --archive PATH/{archive} "
          f"--data_dir {tmp_path}") in message
  assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message


# --- Fashion-MNIST --------------------------------------------------------------------------

def _assert_split_is(split: data.Split, images: np.ndarray, labels: np.ndarray) -> None:
  assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
  assert split.images.shape == (len(images), 28, 28, 1) and split.num_classes == 10
  np.testing.assert_array_equal(split.images[..., 0], images)
  np.testing.assert_array_equal(split.labels, labels)


def test_fashion_mnist_idx_files_load_exactly(tmp_path):
  written = helpers.write_fashion_idx(tmp_path)
  for split, (images, labels) in written.items():
    _assert_split_is(data.load("fashion_mnist", split, data_dir=str(tmp_path)), images, labels)


@pytest.mark.parametrize("file,content,match", [
    ("train-images-idx3-ubyte.gz", helpers.idx_bytes(np.zeros((24, 28, 28)), 0x801),
     "magic number 2049, not 0x0803"),
    ("train-images-idx3-ubyte.gz", helpers.idx_bytes(np.zeros((24, 28, 28)), 0x803)[:-5],
     r"holds 18811 bytes of data; its header \(24, 28, 28\) says 18816 \(truncated"),
    ("train-images-idx3-ubyte.gz", helpers.idx_bytes(np.zeros((24, 32, 32)), 0x803),
     r"holds \(32, 32\) images, not 28×28"),
    ("train-labels-idx1-ubyte.gz", helpers.idx_bytes(np.zeros(23), 0x801),
     "24 images but .* 23 labels"),
    ("train-labels-idx1-ubyte.gz", helpers.idx_bytes(np.full(24, 10), 0x801), "holds label 10"),
    ("train-labels-idx1-ubyte.gz", b"", "magic number None"),
])
def test_corrupt_fashion_mnist_files_stop_with_the_ways_to_get_it(tmp_path, file, content,
                                                                   match):
  helpers.write_fashion_idx(tmp_path)
  helpers.write_gz(tmp_path / file, content)
  with pytest.raises(fashion_mnist.DataError, match=match) as raised:
    data.load("fashion_mnist", "train", data_dir=str(tmp_path))
  assert "apt-get install dataset-fashion-mnist" in str(raised.value)
  assert "download_and_prepare(file_format='array_record')" in str(raised.value)


def test_truncated_gzip_or_missing_fashion_mnist_file_is_named(tmp_path):
  helpers.write_fashion_idx(tmp_path)
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:200])  # a download cut short
  with pytest.raises(fashion_mnist.DataError, match="is not a readable .gz file"):
    data.load("fashion_mnist", "test", data_dir=str(tmp_path))
  path.unlink()
  with pytest.raises(cifar.DatasetNotFoundError) as raised:
    data.load("fashion_mnist", "test", data_dir=str(tmp_path))
  message = str(raised.value)
  assert f"No Fashion-MNIST file {path}." in message
  assert "not prepared in" in message and "apt-get install dataset-fashion-mnist" in message
  assert f"tfds.builder('fashion_mnist', data_dir='{tmp_path}')" in message
  data.load("fashion_mnist", "train", data_dir=str(tmp_path))  # the other split is whole


@needs_tensorflow
def test_fashion_mnist_prepared_by_tfds_loads_in_the_official_order(tmp_path):
  idx_dir, tfds_dir = tmp_path / "idx", str(tmp_path / "tfds")
  idx_dir.mkdir()
  written = helpers.write_fashion_idx(idx_dir, counts=(40, 20), seed=1)
  files = {name: str(idx_dir / name) for names in fashion_mnist.FILES.values() for name in names}
  # TFDS's own fashion_mnist builder, told to expect 40 and 20 examples instead of the official
  # 60,000 and 10,000, writes the array_record directory that download_and_prepare writes.
  script = f"""
from unittest import mock
from tensorflow_datasets.image_classification import mnist
from robustwidth.data import tfds_files
from tests import helpers
with (mock.patch.multiple(mnist, _TRAIN_EXAMPLES=40, _TEST_EXAMPLES=20),
      helpers.tfds_accepts_generated("fashion_mnist", {files!r})):
  tfds_files.prepare_offline("fashion_mnist", {files!r}, data_dir={tfds_dir!r})
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert glob.glob(os.path.join(tfds_dir, "fashion_mnist", "*", "*.array_record*"))
  for split, (images, labels) in written.items():  # tfds_dir holds no IDX files
    _assert_split_is(data.load("fashion_mnist", split, data_dir=tfds_dir), images, labels)

  # Recorded as tfrecord (what download_and_prepare writes by default), it is refused.
  info_path, = glob.glob(os.path.join(tfds_dir, "fashion_mnist", "*", "dataset_info.json"))
  with open(info_path) as f:
    info = json.load(f)
  with open(info_path, "w") as f:
    json.dump({**info, "fileFormat": "tfrecord"}, f)
  with pytest.raises(cifar.DatasetNotFoundError, match="is tfrecord, which allows no random"):
    data.load("fashion_mnist", "test", data_dir=tfds_dir)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason=f"no {fashion_mnist.DEBIAN_DIR}: install the Debian package "
                           "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
def test_the_debian_package_files_load():
  for split, count in (("train", 60_000), ("test", 10_000)):
    loaded = fashion_mnist.load_idx(split, fashion_mnist.DEBIAN_DIR)
    assert loaded.images.shape == (count, 28, 28, 1) and loaded.images.dtype == np.uint8
    # Xiao et al. 2017: 6,000 training and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(loaded.labels), np.full(10, count // 10))
    assert loaded.images.min() == 0 and loaded.images.max() == 255


class _FakeApt:
  """subprocess.run for apt-get (other commands run): records each apt-get command; `install`
  writes the package's files."""

  def __init__(self, package_dir, fail=None):
    self.package_dir, self.fail, self.commands = package_dir, fail, []
    self.run = subprocess.run

  def __call__(self, command, **kwargs):
    if command[0] != "apt-get":
      return self.run(command, **kwargs)
    self.commands.append(command)
    if command[:2] == ["apt-get", "install"] and not self.fail:
      self.package_dir.mkdir()
      helpers.write_fashion_idx(self.package_dir, counts=(30, 10))
    return subprocess.CompletedProcess(command, 100 if command == self.fail else 0, "",
                                       "E: Unable to locate package" if self.fail else "")


@pytest.fixture
def no_fashion_mnist(monkeypatch, tmp_path):
  """Neither TFDS's default directory nor the Debian one holds Fashion-MNIST; this runs as
  root with apt-get on the PATH."""
  import tensorflow_datasets as tfds
  from launch import prepare_data
  monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "debian"))
  monkeypatch.setattr(os, "geteuid", lambda: 0)
  monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
  return prepare_data, tmp_path / "debian"


def test_prepare_data_installs_the_debian_package_where_fashion_mnist_is_missing(
    no_fashion_mnist, monkeypatch, capsys):
  prepare_data, debian_dir = no_fashion_mnist
  apt = _FakeApt(debian_dir)
  monkeypatch.setattr(subprocess, "run", apt)
  prepare_data.main(["fashion_mnist"])
  assert apt.commands == [["apt-get", "update"],
                          ["apt-get", "install", "-y", "dataset-fashion-mnist"]]
  assert capsys.readouterr().out.splitlines()[-1] == (
      "fashion_mnist is ready: 30 train, 10 test examples.")
  prepare_data.main(["fashion_mnist"])  # present now: nothing is installed again
  assert len(apt.commands) == 2


def test_prepare_data_names_both_ways_where_it_cannot_install_fashion_mnist(
    no_fashion_mnist, monkeypatch, tmp_path):
  prepare_data, debian_dir = no_fashion_mnist
  apt = _FakeApt(debian_dir, fail=["apt-get", "install", "-y", "dataset-fashion-mnist"])
  monkeypatch.setattr(subprocess, "run", apt)
  with pytest.raises(SystemExit) as failed:  # the package cannot be found
    prepare_data.main(["fashion_mnist"])
  assert "`apt-get install -y dataset-fashion-mnist` failed (100): E: Unable" in str(
      failed.value)
  monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root; then another data_dir
  for argv in (["fashion_mnist"], ["fashion_mnist", "--data_dir", str(tmp_path / "mine")]):
    with pytest.raises(SystemExit) as failed:
      prepare_data.main(argv)
    message = str(failed.value)
    assert "apt-get update && apt-get install dataset-fashion-mnist" in message
    assert "download_and_prepare(file_format='array_record')" in message
  assert len(apt.commands) == 2


# --- Iterators ----------------------------------------------------------------------------------

def _indexed_split(count: int) -> data.Split:
  """Example i has label i and every pixel i, so a batch names the examples it holds."""
  images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None],
                           (count, 2, 2, 1)).copy()
  return data.Split(images, np.arange(count, dtype=np.int32), num_classes=count)


def _take(iterator, count: int) -> list[dict]:
  return [next(iterator) for _ in range(count)]


def test_train_batches_are_epoch_permutations_and_convert_images():
  split, batch, seed = _indexed_split(50), 8, 3
  per_epoch = data.steps_per_epoch(split, batch)
  assert per_epoch == 6  # the last partial batch is dropped
  batches = _take(data.train_batches(split, global_batch=batch, seed=seed, start_step=0),
                  3 * per_epoch)
  for epoch in range(3):
    labels = np.concatenate([b["label"] for b in batches[epoch * per_epoch:][:per_epoch]])
    order = data.epoch_permutation(len(split), seed, epoch)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(split)))
    np.testing.assert_array_equal(labels, order[:per_epoch * batch])
  assert not np.array_equal(data.epoch_permutation(50, seed, 0), data.epoch_permutation(50, seed, 1))
  first = batches[0]
  assert first["image"].dtype == np.float32 and first["image"].shape == (batch, 2, 2, 1)
  np.testing.assert_allclose(first["image"][:, 0, 0, 0], first["label"] / 255.0)


@pytest.mark.parametrize("process_count", [2, 4])
def test_host_slices_partition_each_global_batch(process_count):
  split, batch = _indexed_split(50), 8
  steps = 14  # crosses two epoch boundaries
  whole = _take(data.train_batches(split, global_batch=batch, seed=0, start_step=0), steps)
  hosts = [_take(data.train_batches(split, global_batch=batch, seed=0, start_step=0,
                                    process_index=p, process_count=process_count), steps)
           for p in range(process_count)]
  for step in range(steps):
    parts = [host[step]["label"] for host in hosts]
    assert all(len(part) == batch // process_count for part in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole[step]["label"])


@pytest.mark.parametrize("start", [1, 6, 7, 12, 17])
def test_resumed_iterator_continues_the_uninterrupted_one(start):
  split, batch = _indexed_split(50), 8
  whole = _take(data.train_batches(split, global_batch=batch, seed=5, start_step=0), start + 8)
  for process_index in (0, 1):
    resumed = _take(data.train_batches(split, global_batch=batch, seed=5, start_step=start,
                                       process_index=process_index, process_count=2), 8)
    rows = slice(process_index * 4, (process_index + 1) * 4)
    for expected, got in zip(whole[start:], resumed):
      np.testing.assert_array_equal(got["label"], expected["label"][rows])
      np.testing.assert_array_equal(got["image"], expected["image"][rows])


def test_train_batch_larger_than_split_or_not_divisible_is_refused():
  with pytest.raises(ValueError, match="lower train.batch_size"):
    data.steps_per_epoch(_indexed_split(5), 8)
  with pytest.raises(ValueError, match="divisible by the number of processes"):
    next(data.train_batches(_indexed_split(50), global_batch=6, seed=0, start_step=0,
                            process_count=4))


@pytest.mark.parametrize("count,process_count,padded", [
    (50, 1, None), (50, 2, None), (48, 4, None), (3, 4, None), (50, 2, 12), (21, 4, 16)])
def test_eval_batches_cover_the_split_once(count, process_count, padded):
  # padded: each batch of 8 examples padded to a device multiple (12 for 6 devices, 16).
  split, batch = _indexed_split(count), 8
  rows = padded or batch
  hosts = [list(data.eval_batches(split, global_batch=batch, padded_batch=padded,
                                  process_index=p, process_count=process_count))
           for p in range(process_count)]
  assert len({len(h) for h in hosts}) == 1 and len(hosts[0]) == -(-count // batch)
  seen = []
  for step in range(len(hosts[0])):
    labels = np.concatenate([h[step]["label"] for h in hosts])
    mask = np.concatenate([h[step]["mask"] for h in hosts])
    assert labels.shape == mask.shape == (rows,) and mask.dtype == bool
    positions = np.arange(step * batch, step * batch + rows)
    np.testing.assert_array_equal(mask, (positions < count) & (positions < (step + 1) * batch))
    np.testing.assert_array_equal(labels[mask], positions[mask])
    seen.append(labels[mask])
  np.testing.assert_array_equal(np.concatenate(seen), np.arange(count))


# --- Augmentation -------------------------------------------------------------------------------

def _crop_flip_reference(image: np.ndarray, padding: int, dy: int, dx: int,
                         flip: bool) -> np.ndarray:
  height, width, _ = image.shape
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  crop = padded[dy:dy + height, dx:dx + width]
  return crop[:, ::-1] if flip else crop


def test_random_crop_flip_matches_numpy_reference():
  padding, batch = 4, 128
  images = np.random.default_rng(0).uniform(0.01, 1.0, (batch, 8, 8, 3)).astype(np.float32)
  out = np.asarray(augment.random_crop_flip(jax.random.key(0), jnp.asarray(images),
                                            crop_padding=padding, flip=True))
  assert out.shape == images.shape and out.dtype == np.float32
  offsets, flips = [], []
  for image, result in zip(images, out):
    matches = [(dy, dx, flip) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
               for flip in (False, True)
               if np.array_equal(_crop_flip_reference(image, padding, dy, dx, flip), result)]
    assert len(matches) == 1, "output is not a zero-padded crop (maybe flipped) of the input"
    offsets.append(matches[0][:2])
    flips.append(matches[0][2])
  offsets = np.array(offsets)
  assert offsets.min() == 0 and offsets.max() == 2 * padding  # the full range of offsets is used
  assert 0.3 < np.mean(flips) < 0.7


def test_random_crop_flip_is_a_deterministic_function_of_the_key():
  images = jnp.asarray(np.random.default_rng(1).uniform(size=(16, 8, 8, 3)), jnp.float32)
  run = lambda key: augment.random_crop_flip(key, images, crop_padding=2, flip=True)
  np.testing.assert_array_equal(run(jax.random.key(7)), run(jax.random.key(7)))
  assert not np.array_equal(run(jax.random.key(7)), run(jax.random.key(8)))
  identity = augment.random_crop_flip(jax.random.key(7), images, crop_padding=0, flip=False)
  np.testing.assert_array_equal(identity, images)
  # Flip only: each image is itself or its mirror.
  flipped = np.asarray(augment.random_crop_flip(jax.random.key(7), images, crop_padding=0,
                                                flip=True))
  images = np.asarray(images)
  assert all(np.array_equal(f, i) or np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images))


def test_random_crop_flip_does_not_depend_on_sharding():
  devices = np.array(jax.devices())
  images = jnp.asarray(np.random.default_rng(2).uniform(size=(2 * len(devices), 8, 8, 3)),
                       jnp.float32)
  key = jax.random.key(3)
  augment_fn = jax.jit(augment.random_crop_flip, static_argnames=("crop_padding", "flip"))
  sharded = jax.device_put(images, NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data")))
  np.testing.assert_array_equal(augment_fn(key, sharded, crop_padding=4, flip=True),
                                augment.random_crop_flip(key, images, crop_padding=4, flip=True))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_images_with_nan_or_inf_are_refused(bad):
  # NaN passed the range check before (NaN < 0 is False).
  images = np.full((3, 2, 2, 1), 0.5, np.float32)
  images[1, 0, 1, 0] = bad
  with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
    data.Split(images, np.zeros(3, np.int32), num_classes=10)


def test_an_empty_truncated_or_nan_extra_file_is_named(tmp_path):
  digits = data.load("digits", "train")
  good = tmp_path / "good.npz"
  np.savez(good, images=digits.images[:40], labels=digits.labels[:40])
  (tmp_path / "empty.npz").write_bytes(b"")
  (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:good.stat().st_size // 2])
  for name in ("empty", "truncated"):
    with pytest.raises(ValueError, match=f"{name}.npz' cannot be read .* empty or truncated"):
      data.load_extra(str(tmp_path / f"{name}.npz"), digits)
  images = digits.images[:40].copy()
  images[3, 2, 2, 0] = np.nan
  np.savez(tmp_path / "nan.npz", images=images, labels=digits.labels[:40])
  with pytest.raises(ValueError, match="nan.npz: float32 images must lie in"):
    data.load_extra(str(tmp_path / "nan.npz"), digits)
