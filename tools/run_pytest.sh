#!/usr/bin/env bash
# Runs pytest with the given interpreter and arguments and never hides a failure.
# Exit code 5 ("no tests were collected") is a failure too: a suite that runs nothing proves nothing.
set -uo pipefail
py="$1"; shift
"$py" -m pytest "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "error: pytest collected no tests (exit code 5); the selection or the test layout is wrong" >&2
  exit 1
fi
exit "$code"
