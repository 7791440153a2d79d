#!/usr/bin/env bash
# Build the MinIO server and the Kubo (IPFS) daemon from the Go module proxy.
#
#   tools/storage/build.sh            build what is missing (idempotent)
#   tools/storage/build.sh --force    rebuild both
#
# Binaries: $STORAGE_BIN (default <repo>/.cache/storage/bin/{minio,ipfs}).
# A binary is skipped when `go version -m` shows it was built from the pinned
# module version. See tools/storage/README.md.
set -euo pipefail

# --- pins -------------------------------------------------------------------
# MinIO publishes no semver tags; this pseudo-version is the final commit of
# github.com/minio/minio (the repo was archived on 2026-02-12) and is what the
# proxy resolves @latest to.
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_COMMIT=7aac2a2c5b7c882e68c1ce017d8256be2feea27f
MINIO_BUILD_TIME=2026-02-12T20:18:48Z
# Kubo is built through the wrapper module in ./kubo (go install @version does
# not work for it, see tools/storage/README.md). Its version is the one required in kubo/go.mod.
KUBO_MODULE=github.com/ipfs/kubo
KUBO_VERSION=v0.43.0

# --- environment --------------------------------------------------------------
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${STORAGE_CACHE:-$ROOT/.cache/storage}
# Module/build caches of their own (another build's cold start once wiped a shared module cache under
# a concurrent build here), outside the checkout so that every checkout on this machine reuses them.
GO_CACHE=${STORAGE_GO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/c2d-node/storage-go}
export GOMODCACHE=${STORAGE_GOMODCACHE:-$GO_CACHE/mod}
export GOCACHE=${STORAGE_GOCACHE:-$GO_CACHE/build}
export GOBIN=${STORAGE_BIN:-$CACHE/bin}
export GOTOOLCHAIN=local      # never try to download another toolchain
export GOFLAGS=-buildvcs=false
export CGO_ENABLED=0          # static binaries, as upstream release builds
unset GOOS GOARCH || true
export GOWORK=off

FORCE=0
case "${1:-}" in
  --force) FORCE=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { printf '[storage/build] %s\n' "$*"; }

command -v go >/dev/null || { log "ERROR: go not found on PATH (need Go >= 1.26.5)"; exit 1; }
mkdir -p "$GOMODCACHE" "$GOCACHE" "$GOBIN"
log "$(go version); GOBIN=$GOBIN"

# built_from BINARY MODULE VERSION LDFLAGS -> 0 if BINARY embeds MODULE at
# VERSION and was linked with exactly LDFLAGS (so changing a flag rebuilds).
built_from() {
  [ -x "$1" ] || return 1
  local info
  info=$(go version -m "$1" 2>/dev/null) || return 1
  awk -v m="$2" -v v="$3" '($1=="mod"||$1=="dep") && $2==m && $3==v {f=1} END {exit !f}' \
    <<<"$info" || return 1
  grep -qF -- "-ldflags=\"$4\"" <<<"$info"
}

build_minio() {
  local bin=$GOBIN/minio p=$MINIO_MODULE/cmd
  local ldflags="-s -w -X $p.Version=$MINIO_BUILD_TIME"
  ldflags+=" -X $p.ReleaseTag=DEVELOPMENT.${MINIO_BUILD_TIME//:/-}"
  ldflags+=" -X $p.CommitID=$MINIO_COMMIT -X $p.ShortCommitID=${MINIO_COMMIT:0:12}"
  ldflags+=" -X $p.CopyrightYear=${MINIO_BUILD_TIME:0:4}"
  if [ "$FORCE" = 0 ] && built_from "$bin" "$MINIO_MODULE" "$MINIO_VERSION" "$ldflags"; then
    log "minio $MINIO_VERSION already built: $bin (skip)"; return
  fi
  log "building minio $MINIO_VERSION (cold: ~10 min on 2 cores) ..."
  local t0=$SECONDS
  # Same tags/flags as MinIO's Makefile (CGO_ENABLED=0, -tags kqueue, -trimpath).
  go install -tags kqueue -trimpath -ldflags "$ldflags" "$MINIO_MODULE@$MINIO_VERSION"
  log "minio built in $((SECONDS - t0)) s: $bin ($(du -h "$bin" | cut -f1))"
}

build_kubo() {
  local bin=$GOBIN/ipfs
  # Blanking the telemetry plugin's default endpoint removes the built-in
  # collector from the binary (documented in Kubo's plugin/plugins/telemetry).
  local ldflags="-s -w -X $KUBO_MODULE/plugin/plugins/telemetry.defaultEndpoint="
  if [ "$FORCE" = 0 ] && built_from "$bin" "$KUBO_MODULE" "$KUBO_VERSION" "$ldflags"; then
    log "ipfs (kubo) $KUBO_VERSION already built: $bin (skip)"; return
  fi
  grep -Eq "^(require)?[[:space:]]*$KUBO_MODULE $KUBO_VERSION( |\$)" "$HERE/kubo/go.mod" || {
    log "ERROR: $HERE/kubo/go.mod does not require $KUBO_MODULE $KUBO_VERSION"; exit 1; }
  log "building ipfs (kubo $KUBO_VERSION) via wrapper module $HERE/kubo (cold: ~7 min) ..."
  local t0=$SECONDS
  (cd "$HERE/kubo" && go install -mod=readonly -trimpath -ldflags "$ldflags" "$KUBO_MODULE/cmd/ipfs")
  log "ipfs built in $((SECONDS - t0)) s: $bin ($(du -h "$bin" | cut -f1))"
}

build_minio
build_kubo
log "done: $("$GOBIN/minio" --version 2>/dev/null | sed -n 1p); ipfs $("$GOBIN/ipfs" version --number 2>/dev/null)"
