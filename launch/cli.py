"""What every launcher's `main(argv)` does first."""
from absl import app, flags, logging


def start(argv) -> None:
  """Refuses stray positional arguments and, unless --verbosity was given, logs at WARNING
  (orbax logs every checkpoint save at INFO)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
