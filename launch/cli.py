"""What every launcher's `main(argv)` does first, and how it reports a user's error."""
import functools
import os
import sys

from absl import app, flags, logging

DEBUG_VARIABLE = "ROBUSTWIDTH_DEBUG"


def start(argv) -> None:
  """Refuses stray positional arguments and, unless --verbosity was given, logs at WARNING
  (orbax logs every checkpoint save at INFO)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def run(main) -> None:
  """`app.run(main)`, with a user's error (a bad configuration, file or data set, a busy
  workdir, a diverged run) printed as one line instead of a traceback; set
  ROBUSTWIDTH_DEBUG=1 for the traceback."""
  app.run(functools.partial(_one_line_errors, main))


def _one_line_errors(main, argv) -> None:
  try:
    main(argv)
  except Exception as error:
    if not _is_user_error(error) or os.environ.get(DEBUG_VARIABLE):
      raise
    sys.exit(f"{type(error).__name__}: {error} (set {DEBUG_VARIABLE}=1 for the traceback)")


def _is_user_error(error: Exception) -> bool:
  from robustwidth.checkpoint import CheckpointError
  from robustwidth.train import NonFiniteError, WorkdirBusyError
  return isinstance(error, (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                            CheckpointError, NonFiniteError, WorkdirBusyError))
