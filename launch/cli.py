"""What every launcher's `main(argv)` does first, and how it reports a user's error."""
import functools
import os
import sys
import traceback

from absl import app, flags, logging

DEBUG_VARIABLE = "ROBUSTWIDTH_DEBUG"


def start(argv) -> None:
  """Refuses stray positional arguments and, unless --verbosity was given, logs at WARNING
  (orbax logs every checkpoint save at INFO), without orbax's notice of saves without
  metrics."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from robustwidth.checkpoint import hide_no_metrics_notice
  hide_no_metrics_notice()


def run(main) -> None:
  """`app.run(main)`, with a user's error (a bad configuration, file or data set, a busy
  workdir, a diverged run) printed as one line instead of a traceback; set
  ROBUSTWIDTH_DEBUG=1 for the traceback."""
  app.run(functools.partial(_one_line_errors, main), flags_parser=_parse_flags)


def _parse_flags(argv):
  """absl's flag parsing, with a key the locked configuration lacks (in a config file or a
  --config.KEY flag) reported as one line."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    if not _raised_by_config_dict(error) or os.environ.get(DEBUG_VARIABLE):
      raise
    from robustwidth.config import unknown_key_error
    sys.exit(f"ConfigError: {unknown_key_error(error)} (set {DEBUG_VARIABLE}=1 for the "
             "traceback)")


def _raised_by_config_dict(error: Exception) -> bool:
  return "ml_collections" in traceback.extract_tb(error.__traceback__)[-1].filename


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
