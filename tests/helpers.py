"""Small models and data shared by the tests."""
import contextlib
import dataclasses
import gzip
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from robustwidth import interop, models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="preparing CIFAR needs TensorFlow: pip install -e '.[prepare]'")


def linear_logits_fn(weights: np.ndarray, bias: np.ndarray):
  """x -> x_flat @ W + b: a linear classifier whose worst cases have closed forms."""
  w, b = jnp.asarray(weights), jnp.asarray(bias)
  return lambda x: x.reshape(x.shape[0], -1) @ w + b


def tiny_wrn(width: int = 1, seed: int = 0, num_classes: int = 10) -> nnx.Module:
  """WRN-10 on 8×8×1 inputs with c = 2: seconds to compile, BatchNorm included."""
  return models.create_model("wide_resnet", width=width, num_classes=num_classes,
                             input_shape=(8, 8, 1), seed=seed, depth=10, base_channels=2)


def images(seed: int, batch: int, shape=(8, 8, 1)) -> jnp.ndarray:
  """Random images in [0, 1] that include exact 0s and 1s (the box's faces)."""
  x = jax.random.uniform(jax.random.key(seed), (batch, *shape))
  return jnp.clip(1.2 * x - 0.1, 0.0, 1.0)


def labels(seed: int, batch: int, num_classes: int = 10) -> jnp.ndarray:
  return jax.random.randint(jax.random.key(seed + 1000), (batch,), 0, num_classes)


def with_trained_batch_norm(model: nnx.Module, x: jnp.ndarray) -> nnx.Module:
  """Moves the BatchNorm running statistics away from their initial (0, 1) values."""
  graphdef, params, state = models.split(model)
  for _ in range(3):
    _, state = models.apply(graphdef, params, state, x, train=True)
  return nnx.merge(graphdef, params, state)


def tiny_mlp(seed: int = 0) -> nnx.Module:
  """A BatchNorm-free MLP on 8×8×1 inputs: compiles in well under a second."""
  return models.create_model("mlp", width=1, num_classes=10, input_shape=(8, 8, 1), seed=seed,
                             depth=1, base_channels=16)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
  """An IDX file's content: a big-endian magic number (type 0x08, unsigned byte; the number of
  dimensions in the low byte), one big-endian uint32 per dimension, then the bytes
  (http://yann.lecun.com/exdb/mnist/)."""
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_gz(path, content: bytes) -> None:
  with gzip.open(path, "wb") as f:
    f.write(content)


def write_fashion_idx(directory, counts=(24, 12), seed=0, learnable=False) -> dict:
  """The four official Fashion-MNIST IDX .gz files holding random images, or, if `learnable`,
  images whose class c is a bright 4×4 patch at the c-th place of a 3×4 grid on noise; returns
  {split: (images, labels)}."""
  rng = np.random.default_rng(seed)
  written = {}
  for split, count in zip(("train", "test"), counts):
    labels = rng.integers(0, 10, count).astype(np.uint8)
    if learnable:
      images = rng.integers(0, 60, (count, 28, 28), dtype=np.uint8)
      for image, label in zip(images, labels):
        row, col = divmod(int(label), 4)
        image[2 + 8 * row:6 + 8 * row, 2 + 7 * col:6 + 7 * col] = 255
    else:
      images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    image_file, label_file = (f"{'t10k' if split == 'test' else 'train'}-{kind}-idx{d}-ubyte.gz"
                              for kind, d in (("images", 3), ("labels", 1)))
    write_gz(directory / image_file, idx_bytes(images, 0x803))
    write_gz(directory / label_file, idx_bytes(labels, 0x801))
    written[split] = (images, labels)
  return written


def cifar_record(labels: list[int], image: np.ndarray) -> bytes:
  """One record of the binary format: label byte(s), then the red, green and blue planes of the
  32x32 image, each row-major (https://www.cs.toronto.edu/~kriz/cifar.html)."""
  planes = [image[:, :, channel].reshape(-1) for channel in range(3)]
  return bytes(labels) + np.concatenate(planes).tobytes()


def write_cifar_archive(path, name: str, rng: np.random.Generator) -> dict:
  """Writes a small archive laid out like the official one; returns {split: (images, labels)}."""
  if name == "cifar10":
    folder = "cifar-10-batches-bin"
    files = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    names = {"batches.meta.txt": 10}
  else:
    folder = "cifar-100-binary"
    files = {"train": ["train.bin"], "test": ["test.bin"]}
    names = {"coarse_label_names.txt": 20, "fine_label_names.txt": 100}
  written = {}
  with tarfile.open(path, "w:gz") as tar:
    def add(member, content: bytes):
      info = tarfile.TarInfo(f"{folder}/{member}")
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))

    for member, count in names.items():  # one name a line, then blank lines, as in the original
      add(member, "".join(f"class_{i}\n" for i in range(count)).encode() + b"\n\n")
    for split, members in files.items():
      images, labels = [], []
      for member in members:
        count = 7 if name == "cifar10" else 24
        image = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100 if name == "cifar100" else 10, count)
        coarse = rng.integers(0, 20, count)
        label_bytes = [[f] if name == "cifar10" else [c, f] for c, f in zip(coarse, fine)]
        add(member, b"".join(cifar_record(b, im) for b, im in zip(label_bytes, image)))
        images.append(image)
        labels.append(fine)
      written[split] = (np.concatenate(images), np.concatenate(labels))
  return written


@contextlib.contextmanager
def tfds_accepts_generated(name: str, files: dict[str, str]):
  """Within it, TFDS's builder `name` takes the generated `files`, {the file name TFDS registers
  for a download: its path}, for the official ones: their sizes and SHA-256 stand in for the
  registered checksums, which generated files cannot match."""
  import tensorflow_datasets as tfds
  with tempfile.TemporaryDirectory() as scratch:
    builder = tfds.builder(name, data_dir=scratch)
    url_infos = {url: dataclasses.replace(  # TFDS finds a manual file by the registered name.
        tfds.download.checksums.compute_url_info(files[info.filename]), filename=info.filename)
        for url, info in builder.url_infos.items() if info.filename in files}
  with mock.patch.object(type(builder), "url_infos", url_infos):
    yield


def prepare_cifar(name: str, tmp_path) -> tuple[str, dict]:
  """A generated archive (`write_cifar_archive`) prepared by `launch.prepare_data` into
  tmp_path/tfds, as users prepare the official one; returns (data_dir, written)."""
  from robustwidth.data import cifar
  archive = tmp_path / f"{name}-generated.tar.gz"
  written = write_cifar_archive(archive, name, np.random.default_rng(len(name)))
  data_dir = str(tmp_path / "tfds")
  script = f"""
from launch import prepare_data
from tests import helpers
with helpers.tfds_accepts_generated({name!r}, {{{cifar.ARCHIVES[name]!r}: {str(archive)!r}}}):
  prepare_data.main([{name!r}, "--archive", {str(archive)!r}, "--data_dir", {data_dir!r}])
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  counts = f"{len(written['train'][1])} train, {len(written['test'][1])} test examples"
  assert counts in result.stdout, result.stdout
  return data_dir, written


def randomized(net):
  """The PyTorch `net` with BatchNorm affine parameters, running statistics and head biases
  away from their defaults, in evaluation mode."""
  import torch
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
      elif isinstance(module, torch.nn.Linear):
        module.bias.uniform_(-0.5, 0.5)
  return net.eval()


def torch_wide_resnet(depth=10, width=2, base=3, in_channels=1, seed=0):
  """The TRADES-layout PyTorch WRN (`interop.torch_model`, needs torch) with random weights,
  `randomized`."""
  import torch
  torch.manual_seed(seed)
  return randomized(interop.torch_model("wide_resnet", 10, depth=depth, width=width,
                                        in_channels=in_channels, base_channels=base))
