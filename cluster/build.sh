#!/usr/bin/env bash
# Build the Docker-free test control plane from the Go module proxy only:
#   etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubectl, kwok,
#   workflow-controller, argo (CLI + `argo server`)
# into $BIN_DIR (default /work/main/.cache/cluster/bin), and copy Argo's CRDs into
# $CRD_DIR. Idempotent: a binary whose stamp matches is not rebuilt.
#
# Usage: cluster/build.sh [component...]    (components: etcd k8s kwok argo; default all)
# Env:   FORCE=1 rebuilds everything; CACHE_ROOT overrides /work/main/.cache.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE_ROOT="${CACHE_ROOT:-$REPO/.cache}"

# ---- versions (keep in sync with gomod/*/go.mod) -------------------------------------------
K8S_VERSION="v1.36.3"          # gomod/k8s/go.mod (k8s.io/kubernetes + staging v0.36.3)
ETCD_VERSION="v3.6.16"         # gomod/etcd/go.mod
KWOK_VERSION="v0.8.0"
# Argo v4.1.2 is NOT served by the module proxy reachable here (403 "This module version is
# not available."); v4.0.7 is the newest v4 release it serves. See cluster/README.md.
ARGO_VERSION="${ARGO_VERSION:-v4.0.7}"
ARGO_MODULE="github.com/argoproj/argo-workflows/v4"

GO_CACHE="${GO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/c2d-node/go}"   # cluster/lib.sh: go_env

OUT="$CACHE_ROOT/cluster"
BIN_DIR="$OUT/bin"
WORK="$OUT/work"
CRD_DIR="$OUT/crds"
mkdir -p "$BIN_DIR" "$WORK" "$CRD_DIR"

LOG_TAG=build TIMES_PREFIX=""
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"
go_env

# ---- etcd ------------------------------------------------------------------------------------
build_etcd() {
  local key="etcd $ETCD_VERSION $GO_VER $(hash_of "$HERE/gomod/etcd/go.mod" "$HERE/gomod/etcd/main.go")"
  if stamp_ok etcd "$key" etcd; then say "etcd $ETCD_VERSION: up to date"; return; fi
  say "etcd $ETCD_VERSION: building (wrapper module cluster/gomod/etcd)"
  local w="$WORK/etcd"; rm -rf "$w"; mkdir -p "$w"
  cp "$HERE/gomod/etcd/go.mod" "$HERE/gomod/etcd/main.go" "$w/"
  [[ -f "$HERE/gomod/etcd/go.sum" ]] && cp "$HERE/gomod/etcd/go.sum" "$w/"
  ( cd "$w" && go mod tidy && \
    go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
      -o "$BIN_DIR/etcd" . )
  "$BIN_DIR/etcd" --version | sed -n 1p
  stamp_write etcd "$key"
}

# ---- kube-apiserver, kube-scheduler, kube-controller-manager ---------------------------------
build_k8s() {
  local key="k8s $K8S_VERSION $GO_VER $(hash_of "$HERE/gomod/k8s/go.mod")"
  local bins=(kube-apiserver kube-scheduler kube-controller-manager kubectl)
  if stamp_ok k8s "$key" "${bins[@]}"; then say "kubernetes $K8S_VERSION: up to date"; return; fi
  say "kubernetes $K8S_VERSION: building ${bins[*]} (wrapper module cluster/gomod/k8s; slow: 10-40 min on 2 cores)"
  local w="$WORK/k8s"; rm -rf "$w"; mkdir -p "$w"
  cp "$HERE/gomod/k8s/go.mod" "$w/"
  [[ -f "$HERE/gomod/k8s/go.sum" ]] && cp "$HERE/gomod/k8s/go.sum" "$w/"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=() b
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  ( cd "$w" && say "  resolving modules (go get)" && go get "${pkgs[@]/%/@$K8S_VERSION}" && \
    say "  compiling" && go build -trimpath -ldflags "$ld" -o "$BIN_DIR/" "${pkgs[@]}" )
  for b in "${bins[@]}"; do echo "  $b: $("$BIN_DIR/$b" --version 2>/dev/null || "$BIN_DIR/$b" version --client 2>/dev/null | sed -n 1p)"; done
  stamp_write k8s "$key"
}

# ---- kwok ------------------------------------------------------------------------------------
build_kwok() {
  local key="kwok $KWOK_VERSION $GO_VER"
  if stamp_ok kwok "$key" kwok; then say "kwok $KWOK_VERSION: up to date"; return; fi
  say "kwok $KWOK_VERSION: go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  ( cd "$WORK" && GOBIN="$BIN_DIR" GOFLAGS="-buildvcs=false" \
      go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" )
  echo "  kwok: $("$BIN_DIR/kwok" --version 2>&1 | sed -n 1p)"
  stamp_write kwok "$key"
}

# ---- Argo: workflow-controller + argo CLI (argo server) ----------------------------------------
# Argo binds its listeners to all interfaces (":2746", ":6060", ":9090") with no flag to change
# that. This patch (applied to the build copy only) prefixes each listen address with the env
# var ARGO_BIND_ADDRESS (unset = upstream behaviour) and makes the controller's healthz port
# configurable with ARGO_HEALTHZ_PORT (default 6060). Each edit must match exactly once.
ARGO_PATCH_ID="bind-v1"
patch_argo_bind() {
  local w="$1"
  _sub() { # file old new
    local f="$w/$1" n
    n="$(grep -cF -- "$2" "$f" || true)"
    [[ "$n" == 1 ]] || fail "argo patch: expected 1 match of '$2' in $1, found $n"
    OLD="$2" NEW="$3" perl -0pi -e 's/\Q$ENV{OLD}\E/$ENV{NEW}/' "$f"
  }
  _sub server/apiserver/argoserver.go 'address := fmt.Sprintf(":%d", port)' \
       'address := fmt.Sprintf("%s:%d", os.Getenv("ARGO_BIND_ADDRESS"), port)'
  _sub cmd/workflow-controller/main.go 'http.ListenAndServe(":6060", nil)' \
       'http.ListenAndServe(os.Getenv("ARGO_BIND_ADDRESS")+":"+func() string { if p := os.Getenv("ARGO_HEALTHZ_PORT"); p != "" { return p }; return "6060" }(), nil)'
  _sub util/telemetry/exporter_prometheus.go 'Addr: fmt.Sprintf(":%v", m.config.port())' \
       'Addr: fmt.Sprintf("%s:%v", os.Getenv("ARGO_BIND_ADDRESS"), m.config.port())'
  say "  patched listen addresses (ARGO_BIND_ADDRESS, ARGO_HEALTHZ_PORT)"
}

argo_src_dir() {
  go mod download -json "$ARGO_MODULE@$ARGO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}
build_argo() {
  local key="argo $ARGO_VERSION $ARGO_PATCH_ID $GO_VER"
  if stamp_ok argo "$key" workflow-controller argo && [[ -f "$CRD_DIR/.version" ]] \
     && [[ "$(cat "$CRD_DIR/.version")" == "$ARGO_VERSION" ]]; then
    say "argo $ARGO_VERSION: up to date"; return
  fi
  say "argo $ARGO_VERSION: downloading module $ARGO_MODULE@$ARGO_VERSION"
  local src; src="$(cd "$WORK" && argo_src_dir)"
  [[ -n "$src" && -d "$src" ]] || fail "argo: could not download $ARGO_MODULE@$ARGO_VERSION"
  # CRDs for up.sh
  rm -rf "$CRD_DIR"; mkdir -p "$CRD_DIR"
  cp -r "$src/manifests/base/crds/minimal" "$src/manifests/base/crds/full" "$CRD_DIR/"
  chmod -R u+w "$CRD_DIR"; rm -f "$CRD_DIR"/*/kustomization.yaml
  echo "$ARGO_VERSION" > "$CRD_DIR/.version"
  # `cmd/argo` embeds ui/dist/app (go:embed), which is not part of the module zip: build from a
  # writable copy of the module with a placeholder index.html (the REST API is unaffected).
  local w="$WORK/argo-src"
  if [[ ! -f "$w/.src-version" || "$(cat "$w/.src-version")" != "$ARGO_VERSION $ARGO_PATCH_ID" ]]; then
    rm -rf "$w"; cp -r "$src" "$w"; chmod -R u+w "$w"
    mkdir -p "$w/ui/dist/app"
    echo '<!doctype html><title>Argo</title><p>Argo Server built without UI static files (API only).</p>' \
      > "$w/ui/dist/app/index.html"
    patch_argo_bind "$w"
    echo "$ARGO_VERSION $ARGO_PATCH_ID" > "$w/.src-version"
  fi
  local ld="-s -w"
  local p="$ARGO_MODULE"
  ld+=" -X $p.version=$ARGO_VERSION -X $p.gitTag=$ARGO_VERSION -X $p.gitTreeState=clean"
  ld+=" -X $p.buildDate=1970-01-01T00:00:00Z -X $p.gitCommit=module-proxy-$ARGO_VERSION"
  say "argo $ARGO_VERSION: compiling workflow-controller and argo"
  ( cd "$w" && go build -trimpath -ldflags "$ld" -o "$BIN_DIR/" ./cmd/workflow-controller ./cmd/argo )
  echo "  argo: $("$BIN_DIR/argo" version --short 2>&1 | sed -n 1p)"
  stamp_write argo "$key"
}

comps=("$@"); [[ ${#comps[@]} -eq 0 ]] && comps=(etcd kwok argo k8s)
say "go $GO_VER; GOMODCACHE=$GOMODCACHE; output $BIN_DIR"
T0=$SECONDS
for c in "${comps[@]}"; do
  case "$c" in
    etcd) timed etcd build_etcd ;;
    k8s|kubernetes) timed kubernetes build_k8s ;;
    kwok) timed kwok build_kwok ;;
    argo) timed argo build_argo ;;
    *) fail "unknown component '$c' (etcd k8s kwok argo)" ;;
  esac
done
say "all done in $((SECONDS - T0))s; binaries:"
ls -l "$BIN_DIR" | sed 's/^/  /'
