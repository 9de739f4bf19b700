"""Makes a data set readable for training.

    python -m launch.prepare_data cifar10 --archive PATH/cifar-10-binary.tar.gz [--data_dir DIR]
    python -m launch.prepare_data fashion_mnist [--data_dir DIR]

CIFAR-10 / CIFAR-100: builds TFDS array_record data from the official archive on disk. Get the
binary version of the archive from https://www.cs.toronto.edu/~kriz/cifar.html. Needs
TensorFlow: pip install -e '.[prepare]'. Training reads the result without TensorFlow.

Fashion-MNIST: loads both splits from where training looks for them. Where they are missing
from the default place and this runs as root on a system with apt-get, it installs the Debian
package that holds the official files (apt-get update first) and loads again; otherwise it
stops with the ways to get them. `make demo` runs this first.
"""
import argparse
import os
import shutil
import subprocess
import sys

from robustwidth.data import cifar, fashion_mnist
from robustwidth.data.tfds_files import DatasetNotFoundError

APT_COMMANDS = (["apt-get", "update"], ["apt-get", "install", "-y", fashion_mnist.DEBIAN_PACKAGE])


def _fashion_mnist_counts(data_dir: str | None) -> dict[str, int]:
  return {split: len(fashion_mnist.load(split, data_dir=data_dir).labels)
          for split in fashion_mnist.FILES}


def prepare_fashion_mnist(data_dir: str | None) -> dict[str, int]:
  """Examples per split once Fashion-MNIST loads, installing the Debian package first where
  the default place lacks it and apt-get can run (as root)."""
  try:
    return _fashion_mnist_counts(data_dir)
  except DatasetNotFoundError:
    if data_dir is not None or os.geteuid() != 0 or shutil.which("apt-get") is None:
      raise
  print(f"Fashion-MNIST is missing; installing the Debian package {fashion_mnist.DEBIAN_PACKAGE}"
        f" into {fashion_mnist.DEBIAN_DIR} with apt-get.", flush=True)
  for command in APT_COMMANDS:
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if result.returncode:
      raise DatasetNotFoundError(f"`{' '.join(command)}` failed ({result.returncode}): "
                                 f"{result.stderr.strip()[-500:]}\n"
                                 f"{fashion_mnist.how_to_get(data_dir)}")
  return _fashion_mnist_counts(data_dir)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m launch.prepare_data", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", choices=(*cifar.ARCHIVES, "fashion_mnist"))
  parser.add_argument("--archive", default=None,
                      help="CIFAR only: the official binary archive, e.g. cifar-10-binary.tar.gz")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
                           "; for fashion_mnist also where its IDX files are (default: the "
                           "Debian package's directory)")
  args = parser.parse_args(argv)
  is_cifar = args.name in cifar.ARCHIVES
  if is_cifar != (args.archive is not None):
    parser.error(f"{args.name} needs --archive" if is_cifar else "fashion_mnist takes no "
                 "--archive: it reads the official IDX files or TFDS's prepared copy")
  try:
    if is_cifar:
      path, counts = cifar.prepare(args.name, args.archive, data_dir=args.data_dir)
      where = f" in {path}"
    else:
      where, counts = "", prepare_fashion_mnist(args.data_dir)
  except (ImportError, FileNotFoundError, ValueError) as error:
    sys.exit(f"prepare_data: {error}")
  print(f"{args.name} is ready{where}: " +
        ", ".join(f"{count} {split}" for split, count in counts.items()) + " examples.")


if __name__ == "__main__":
  main()
