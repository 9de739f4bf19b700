#!/usr/bin/env bash
# Runs the test suite with the project's virtual environment (make test sets it up).
# pytest exits 5 when it collects no test: that means the suite was lost, so say so and fail.
set -u
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q -n 2 --durations=15 tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests (exit 5); the suite is missing or filtered away." >&2
  exit 1
fi
exit "$rc"
