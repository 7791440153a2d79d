#!/usr/bin/env bash
# Reserves the host uids/gids the local engine's job sandboxes run as: a line
# `<user>:<first id>:<count>` in /etc/subuid and /etc/subgid (user: $C2D_ENGINE__SANDBOX_USER, default
# c2d-jobs; 65,536 ids from the first free 65,536-aligned block at or above 1,000,000 that no other line of
# either file and no account in /etc/passwd or /etc/group uses). Registered there, the range is never handed
# to anyone else by useradd or rootless container runtimes. Runs once: a line already there is kept.
# Only an engine that runs as root uses the range; without root (and without sudo) this says what to add.
set -euo pipefail

user="${C2D_ENGINE__SANDBOX_USER:-c2d-jobs}"
count=65536
if grep -q "^${user}:" /etc/subuid 2>/dev/null && grep -q "^${user}:" /etc/subgid 2>/dev/null; then
  exit 0
fi
# the end of every range and id in use, then the first aligned block above all of them
highest=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'NF >= 3 && $2 ~ /^[0-9]+$/ { print $2 + $3 }' | sort -n | tail -1)
accounts=$(cut -d: -f3 /etc/passwd /etc/group | awk '$1 < 4000000000 { print $1 + 1 }' | sort -n | tail -1)
start=1000000
for end in ${highest:-0} ${accounts:-0}; do
  [ "$end" -gt "$start" ] && start=$end
done
start=$(( (start + count - 1) / count * count ))
line="${user}:${start}:${count}"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "[setup] not root: add the line '${line}' to /etc/subuid and /etc/subgid for the job sandboxes" >&2
  exit 0
fi
for table in /etc/subuid /etc/subgid; do
  grep -q "^${user}:" "$table" 2>/dev/null || echo "$line" | $SUDO tee -a "$table" >/dev/null
done
echo "[setup] job sandboxes run as host ids ${start}-$(( start + count - 1 )) (${user} in /etc/subuid, /etc/subgid)"
