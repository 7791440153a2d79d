#!/usr/bin/env bash
# Prints the Python that `make setup` makes the node's virtualenv with (`make PYTHON=... setup` overrides):
# the distribution's /usr/bin/python3 when it is >= 3.11 and can make a venv, else `python3` from PATH.
# Distribution builds (Debian, Ubuntu, Fedora), like the python:* images the node runs in on a cluster,
# are compiled with profile-guided and link-time optimisation; version managers' default builds
# (pyenv's) are not, and every Python process of a job pays for it: on this project's 2-core CI machine
# pyenv's 3.11 took 2-21% (median 9%) more CPU per job than Debian's (bench/local_jobs.py, alternating runs).
set -uo pipefail

system=/usr/bin/python3
if [[ -x "$system" ]] && "$system" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
  echo "$system"
else
  echo python3
fi
