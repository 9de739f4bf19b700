"""Writes a width study's report from the records its runs left in the workdir.

  python -m launch.report --workdir runs/study
"""
from absl import flags

from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory holding <run>/record.json.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  cli.start(argv)
  from robustwidth.studies import report
  print(f"Report: {report.write(_WORKDIR.value)}")


if __name__ == "__main__":
  cli.run(main)
