#!/usr/bin/env bash
# Start/stop throwaway MinIO and Kubo servers on 127.0.0.1 (see tools/storage/README.md).
#
#   run.sh minio DIR PORT CONSOLE_PORT   # creds: $MINIO_ROOT_USER / $MINIO_ROOT_PASSWORD
#   run.sh ipfs  DIR API_PORT GATEWAY_PORT
#   run.sh stop  DIR
#
# DIR is created; it holds the data, server.log and server.pid. The start
# commands return once the server answers its readiness check (exit 1 after
# $STORAGE_READY_TIMEOUT seconds, default 60). Binaries: $STORAGE_BIN.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${STORAGE_BIN:-$HERE/../../.cache/storage/bin}
TIMEOUT=${STORAGE_READY_TIMEOUT:-60}

die() { echo "run.sh: $*" >&2; exit 1; }

# wait_ready DIR CURL_ARGS... : poll until curl succeeds or the server dies
wait_ready() {
  local dir=$1; shift
  local pid; pid=$(cat "$dir/server.pid")
  local deadline=$((SECONDS + TIMEOUT))
  until curl -sf -o /dev/null --max-time 2 "$@"; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/server.log" >&2; die "server exited"; }
    [ $SECONDS -lt $deadline ] || { tail -20 "$dir/server.log" >&2; die "not ready after ${TIMEOUT}s"; }
    sleep 0.2
  done
}

start() { # start DIR CMD... : run CMD detached, pid in DIR/server.pid
  local dir=$1; shift
  if [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
    die "already running in $dir (pid $(cat "$dir/server.pid"))"
  fi
  setsid "$@" >"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$dir/server.pid"
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: run.sh minio|ipfs DIR PORT PORT2 | run.sh stop DIR"
case "$cmd" in
  minio)
    port=${3:?PORT}; cport=${4:?CONSOLE_PORT}
    : "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD (>= 8 chars)}"
    mkdir -p "$dir/data"
    # MINIO_UPDATE=off: no release check against the internet at start.
    export MINIO_UPDATE=off MINIO_ROOT_USER MINIO_ROOT_PASSWORD
    start "$dir" "$BIN/minio" server "$dir/data" --quiet \
      --address "127.0.0.1:$port" --console-address "127.0.0.1:$cport"
    wait_ready "$dir" "http://127.0.0.1:$port/minio/health/live"
    echo "minio ready: http://127.0.0.1:$port (pid $(cat "$dir/server.pid"))" ;;
  ipfs)
    api=${3:?API_PORT}; gw=${4:?GATEWAY_PORT}
    export IPFS_PATH=$dir/repo IPFS_TELEMETRY=off
    if [ ! -f "$IPFS_PATH/config" ]; then
      mkdir -p "$dir"
      # test profile: loopback-only addresses, no bootstrap peers, no mDNS,
      # no AutoTLS/AutoConf (no fetches from the internet).
      "$BIN/ipfs" init --profile test --empty-repo >"$dir/init.log" 2>&1 \
        || { cat "$dir/init.log" >&2; die "ipfs init failed"; }
      "$BIN/ipfs" config --json Addresses.Swarm '[]'
    fi
    "$BIN/ipfs" config Addresses.API "/ip4/127.0.0.1/tcp/$api"
    "$BIN/ipfs" config Addresses.Gateway "/ip4/127.0.0.1/tcp/$gw"
    start "$dir" "$BIN/ipfs" daemon --offline
    wait_ready "$dir" -X POST "http://127.0.0.1:$api/api/v0/version"
    echo "ipfs ready: http://127.0.0.1:$api/api/v0 (pid $(cat "$dir/server.pid"))" ;;
  stop)
    [ -f "$dir/server.pid" ] || exit 0
    pid=$(cat "$dir/server.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$dir/server.pid" ;;
  *) die "unknown command: $cmd" ;;
esac
