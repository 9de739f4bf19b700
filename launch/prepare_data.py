"""Builds CIFAR-10 or CIFAR-100 as TFDS array_record data from the official archive on disk.

    python -m launch.prepare_data cifar10 --archive PATH/cifar-10-binary.tar.gz [--data_dir DIR]

Get the binary version of the archive from https://www.cs.toronto.edu/~kriz/cifar.html. Needs
TensorFlow: pip install -e '.[prepare]'. Training reads the result without TensorFlow.
"""
import argparse
import sys

from robustwidth.data import cifar


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m launch.prepare_data", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", choices=tuple(cifar.ARCHIVES))
  parser.add_argument("--archive", required=True,
                      help="the official binary archive, e.g. cifar-10-binary.tar.gz")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  args = parser.parse_args(argv)
  try:
    path, counts = cifar.prepare(args.name, args.archive, data_dir=args.data_dir)
  except (ImportError, FileNotFoundError, ValueError) as error:
    sys.exit(f"prepare_data: {error}")
  print(f"{args.name} is ready in {path}: " +
        ", ".join(f"{count} {split}" for split, count in counts.items()) + " examples.")


if __name__ == "__main__":
  main()
