#!/usr/bin/env bash
# The ocean.py 3.1.2 client in its own virtualenv (.venv-ocean): it pins web3 6, and its
# enforce_typing decorator fails on Python >= 3.11 (isinstance(x, typing.Any) raises), so use a
# Python 3.8-3.10 when one is on the machine (PATH, pyenv). Without one, the ocean.py test skips
# and says why.
set -euo pipefail
VENV="${1:-.venv-ocean}"
STAMP="$VENV/.installed-ocean-lib-3.1.2"
[[ -f "$STAMP" ]] && exit 0

find_python() {
  local candidate
  for candidate in python3.10 python3.9 python3.8; do
    # pyenv shims exist for versions that are not selected: check that it really runs
    "$candidate" -c 'import sys' >/dev/null 2>&1 && { command -v "$candidate"; return; }
  done
  local root
  root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  for candidate in "$root"/versions/3.10*/bin/python3 "$root"/versions/3.9*/bin/python3 "$root"/versions/3.8*/bin/python3; do
    [[ -x "$candidate" ]] && "$candidate" -c 'import venv' >/dev/null 2>&1 && { echo "$candidate"; return; }
  done
}

PYTHON="$(find_python || true)"
if [[ -z "$PYTHON" ]]; then
  echo "[setup] no Python 3.8-3.10 found: the ocean.py client test will be skipped (it needs one)"
  exit 0
fi
echo "[setup] ocean.py 3.1.2 client in $VENV (with $("$PYTHON" --version))"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "ocean-lib==3.1.2"
touch "$STAMP"
