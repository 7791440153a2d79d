# Shared by the cluster/ scripts; sourced, never run. The script sets, before sourcing:
#   LOG_TAG                      the prefix of its messages ([LOG_TAG HH:MM:SS] ...)
# and, for what it uses:
#   go builds:   GO_CACHE (module/build caches), BIN_DIR (outputs and stamps), OUT (build-times.log),
#                TIMES_PREFIX (prefix of the names in build-times.log; may be empty)
#   components:  PIDS, LOGS, START_TIMEOUT, BUILD_HINT (what to run when a binary is missing), and the
#                functions binary_of NAME (the path its /proc cmdline shows) and probe NAME (0: healthy)
# shellcheck shell=bash

say()  { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*"; }
warn() { printf '[%s %s] WARNING: %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
fail() { printf '[%s %s] ERROR: %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
tail_log() { echo "---- last lines of $1 ----" >&2; tail -n "${2:-20}" "$1" >&2 2>/dev/null || true; }

# ---- Go builds ------------------------------------------------------------------------------------
# The Go module and build caches (~13 GB warm) live outside the checkout, so that every checkout on this
# machine (a CI runner's fresh clones) reuses them: a clean clone then only links the binaries.
go_env() {
  export GOPATH="$GO_CACHE"
  export GOMODCACHE="$GO_CACHE/mod"
  export GOCACHE="$GO_CACHE/build"
  export GOTMPDIR="$GO_CACHE/tmp"
  export GOTOOLCHAIN=local
  export GOFLAGS="-mod=mod -buildvcs=false"
  export CGO_ENABLED=0
  mkdir -p "$GOMODCACHE" "$GOCACHE" "$GOTMPDIR"
  command -v go >/dev/null || fail "go not found in PATH"
  GO_VER="$(go env GOVERSION)"
}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# stamp_ok NAME KEY FILE... : true when every FILE exists and is not empty (relative to $BIN_DIR unless
# absolute) and the stamp for NAME equals KEY (FORCE=1: never)
stamp_ok() {
  local name="$1" key="$2"; shift 2
  [[ "${FORCE:-0}" == 1 ]] && return 1
  [[ -f "$BIN_DIR/.$name.stamp" && "$(cat "$BIN_DIR/.$name.stamp")" == "$key" ]] || return 1
  local b; for b in "$@"; do [[ "$b" == /* ]] || b="$BIN_DIR/$b"; [[ -s "$b" ]] || return 1; done
}
stamp_write() { echo "$2" > "$BIN_DIR/.$1.stamp"; }

# timed NAME CMD... : run CMD, print and record its seconds in $OUT/build-times.log
timed() {
  local name="$1"; shift
  local t0=$SECONDS
  "$@"
  local dt=$((SECONDS - t0))
  say "$name: done in ${dt}s"
  echo "$(date -u +%FT%TZ) ${TIMES_PREFIX:-}$name ${dt}s go=$GO_VER" >> "$OUT/build-times.log"
}

# ---- components: one process each, in its own session, with a pid file and a log ------------------
# alive PID: exists and is not a zombie (a reaped-later child of an earlier shell still answers kill -0)
alive() { [[ -e "/proc/$1" ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }

# pid_of NAME: the pid of the running component (empty when not running; a stale pid file is removed)
pid_of() {
  local f="$PIDS/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ -n "$pid" ]] && alive "$pid" \
     && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(binary_of "$1")"; then
    echo "$pid"
  else
    rm -f "$f"
  fi
}

# start_component NAME [K=V...] -- CMD ARGS... : start CMD (env K=V) unless it runs, then wait for probe
start_component() {
  local name="$1"; shift
  local envs=()
  while [[ "$1" != "--" ]]; do envs+=("$1"); shift; done
  shift
  local log="$LOGS/$name.log" pid
  pid="$(pid_of "$name")"
  if [[ -n "$pid" ]]; then
    if probe "$name"; then say "$name: already running (pid $pid)"; return 0; fi
    say "$name: running (pid $pid) but not healthy yet; waiting"
  else
    [[ -x "$1" ]] || command -v "$1" >/dev/null || fail "$name: binary $1 missing; run $BUILD_HINT"
    printf '\n===== %s start %s =====\n%s\n' "$name" "$(date -u +%FT%TZ)" "$*" >> "$log"
    # setsid: own session + process group (pid == pgid) so that stop_component signals the whole group
    env "${envs[@]}" setsid "$@" >> "$log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PIDS/$name.pid"
    say "$name: started (pid $pid)"
  fi
  local t0=$SECONDS
  until probe "$name"; do
    if ! alive "$pid"; then
      rm -f "$PIDS/$name.pid"; tail_log "$log" 15
      fail "$name exited during startup; log: $log"
    fi
    if (( SECONDS - t0 > START_TIMEOUT )); then
      tail_log "$log" 15
      fail "$name not healthy after ${START_TIMEOUT}s (pid $pid still running); log: $log"
    fi
    sleep 0.3
  done
  say "$name: healthy after $((SECONDS - t0))s"
}

# stop_component NAME: SIGTERM to its process group, SIGKILL after 10 s and to whatever is left of it
stop_component() {
  local name="$1" pid i
  pid="$(pid_of "$name")"
  [[ -n "$pid" ]] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    say "$name: still running after 10s, sending SIGKILL"
  fi
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  rm -f "$PIDS/$name.pid"
  say "$name: stopped (pid $pid)"
}
