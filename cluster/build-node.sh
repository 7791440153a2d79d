#!/usr/bin/env bash
# Build a REAL Kubernetes node (cluster/node.sh) from the Go module proxy and the k8s module's sources:
#   containerd + ctr + containerd-shim-runc-v2, runc (seccomp), kubelet, argoexec, pause, kube-router,
#   local-path-provisioner (the dev volume provisioner, as kind and k3s use it)
# into $NODE_BIN_DIR (default /work/main/.cache/cluster/node-bin, a sibling of build.sh's bin/), and
# pack the node's images (pause, argoexec) as OCI archives into $NODE_IMG_DIR (.cache/cluster/node-images).
# Same caches as cluster/build.sh (GOPATH/GOMODCACHE/GOCACHE under $GO_CACHE), same stamps: a
# binary whose inputs are unchanged is not rebuilt. Times go to .cache/cluster/build-times.log.
#
# Usage: cluster/build-node.sh [component...]
#   components: containerd runc pause kuberouter localpath kubelet argoexec images   (default: all, in that order)
#   kubelet needs build.sh's k8s step (warm module cache, work/k8s/go.sum); argoexec needs build.sh's
#   argo step (the build copy at .cache/cluster/work/argo-src); images needs pause and argoexec.
# Env:   FORCE=1 rebuilds everything; CACHE_ROOT overrides /work/main/.cache.
# Needs: gcc + libc static libs (pause), libseccomp-dev (runc), umoci (images): tools/setup_system.sh node
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE_ROOT="${CACHE_ROOT:-$REPO/.cache}"

# ---- versions --------------------------------------------------------------------------------
K8S_VERSION="v1.36.3"            # same as build.sh (gomod/k8s/go.mod)
CONTAINERD_VERSION="v2.4.2"
RUNC_VERSION="v1.5.3"
KUBE_ROUTER_VERSION="v2.1.0"     # the only version the module proxy lists
LOCAL_PATH_VERSION="v0.0.30"     # rancher/local-path-provisioner (the only version the module proxy lists)
ARGO_VERSION="${ARGO_VERSION:-v4.0.7}"   # same as build.sh
ARGO_MODULE="github.com/argoproj/argo-workflows/v4"
PAUSE_TAG="3.10"                 # image tag of localhost/c2d-pause

GO_CACHE="${GO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/c2d-node/go}"   # cluster/lib.sh: go_env

OUT="$CACHE_ROOT/cluster"
BIN_DIR="$OUT/node-bin"
IMG_DIR="$OUT/node-images"
WORK="$OUT/work"
mkdir -p "$BIN_DIR" "$IMG_DIR" "$WORK"

LOG_TAG=build-node TIMES_PREFIX="node:"
# shellcheck source=cluster/lib.sh
source "$HERE/lib.sh"
go_env

mod_dir() { # module@version -> its directory in the module cache (downloads it when needed)
  ( cd "$WORK" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' )
}

# ---- containerd, ctr, containerd-shim-runc-v2 (pure Go) -----------------------------------------
build_containerd() {
  local key="containerd $CONTAINERD_VERSION $GO_VER"
  local bins=(containerd ctr containerd-shim-runc-v2)
  if stamp_ok containerd "$key" "${bins[@]}"; then say "containerd $CONTAINERD_VERSION: up to date"; return; fi
  say "containerd $CONTAINERD_VERSION: go install ${bins[*]} (CGO_ENABLED=0; slow: ~5 min cold)"
  local m="github.com/containerd/containerd/v2" pkgs=() b
  for b in "${bins[@]}"; do pkgs+=("$m/cmd/$b@$CONTAINERD_VERSION"); done
  ( cd "$WORK" && GOBIN="$BIN_DIR" GOFLAGS="-buildvcs=false" go install -trimpath \
      -ldflags "-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Revision=module-proxy" "${pkgs[@]}" )
  echo "  containerd: $("$BIN_DIR/containerd" --version 2>&1 | sed -n 1p)"
  stamp_write containerd "$key"
}

# ---- runc (cgo + libseccomp) -------------------------------------------------------------------
build_runc() {
  local key="runc $RUNC_VERSION seccomp $GO_VER"
  if stamp_ok runc "$key" runc; then say "runc $RUNC_VERSION: up to date"; return; fi
  [[ -e /usr/include/seccomp.h ]] || fail "runc: libseccomp-dev missing (tools/setup_system.sh node)"
  command -v gcc >/dev/null || fail "runc: gcc missing (tools/setup_system.sh node)"
  say "runc $RUNC_VERSION: go install (CGO_ENABLED=1, -tags seccomp)"
  ( cd "$WORK" && GOBIN="$BIN_DIR" GOFLAGS="-buildvcs=false" CGO_ENABLED=1 go install -trimpath -tags seccomp \
      -ldflags "-s -w -X main.version=${RUNC_VERSION#v} -X main.gitCommit=module-proxy" \
      "github.com/opencontainers/runc@$RUNC_VERSION" )
  echo "  runc: $("$BIN_DIR/runc" --version 2>&1 | tr '\n' ' ')"
  stamp_write runc "$key"
}

# ---- pause (pause.c from k8s.io/kubernetes, static) ----------------------------------------------
build_pause() {
  local src; src="$(mod_dir "k8s.io/kubernetes@$K8S_VERSION")/build/pause/linux/pause.c"
  [[ -f "$src" ]] || fail "pause: $src not found"
  local key="pause $K8S_VERSION $(gcc -dumpfullversion 2>/dev/null) $(hash_of "$src")"
  if stamp_ok pause "$key" pause; then say "pause ($K8S_VERSION): up to date"; return; fi
  command -v gcc >/dev/null || fail "pause: gcc missing (tools/setup_system.sh node)"
  say "pause: gcc -static $src"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-c2d" -o "$BIN_DIR/pause.tmp" "$src"
  strip "$BIN_DIR/pause.tmp"; mv "$BIN_DIR/pause.tmp" "$BIN_DIR/pause"
  echo "  pause: $("$BIN_DIR/pause" -v 2>&1)"
  stamp_write pause "$key"
}

# ---- kube-router (only --run-firewall is used: NetworkPolicy enforcement) --------------------------
build_kuberouter() {
  local key="kube-router $KUBE_ROUTER_VERSION $GO_VER"
  if stamp_ok kuberouter "$key" kube-router; then say "kube-router $KUBE_ROUTER_VERSION: up to date"; return; fi
  say "kube-router $KUBE_ROUTER_VERSION: go install"
  ( cd "$WORK" && GOBIN="$BIN_DIR" GOFLAGS="-buildvcs=false" go install -trimpath \
      -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
      "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" )
  echo "  kube-router: $("$BIN_DIR/kube-router" --version 2>&1 | sed -n 1p)"
  stamp_write kuberouter "$key"
}

# ---- local-path-provisioner: PVs for the per-job volumeClaimTemplates (node.sh runs it) -----------
build_localpath() {
  local key="local-path-provisioner $LOCAL_PATH_VERSION $GO_VER"
  if stamp_ok localpath "$key" local-path-provisioner; then say "local-path-provisioner $LOCAL_PATH_VERSION: up to date"; return; fi
  say "local-path-provisioner $LOCAL_PATH_VERSION: go install"
  ( cd "$WORK" && GOBIN="$BIN_DIR" GOFLAGS="-buildvcs=false" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
      "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION" )
  stamp_write localpath "$key"
}

# ---- kubelet (same wrapper module as build.sh's apiserver) --------------------------------------
build_kubelet() {
  local key="kubelet $K8S_VERSION $GO_VER $(hash_of "$HERE/gomod/k8s/go.mod")"
  if stamp_ok kubelet "$key" kubelet; then say "kubelet $K8S_VERSION: up to date"; return; fi
  say "kubelet $K8S_VERSION: building (wrapper module cluster/gomod/k8s)"
  local w="$WORK/kubelet"; rm -rf "$w"; mkdir -p "$w"
  cp "$HERE/gomod/k8s/go.mod" "$w/"
  # build.sh's resolved go.sum (same requirements) saves the resolution step
  if [[ -f "$WORK/k8s/go.sum" ]]; then cp "$WORK/k8s/go.sum" "$w/"
  elif [[ -f "$HERE/gomod/k8s/go.sum" ]]; then cp "$HERE/gomod/k8s/go.sum" "$w/"; fi
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  ( cd "$w" && go get "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" && \
    go build -trimpath -ldflags "$ld" -o "$BIN_DIR/kubelet" k8s.io/kubernetes/cmd/kubelet )
  echo "  kubelet: $("$BIN_DIR/kubelet" --version 2>&1 | sed -n 1p)"
  stamp_write kubelet "$key"
}

# ---- argoexec (from build.sh's Argo build copy) ---------------------------------------------------
# The module zip drops symlinks, and upstream's workflow/executor/osspecific/signal_linux.go is a
# symlink to signal_darwin.go, so a plain build fails with
#   workflow/executor/osspecific/command_unix.go:37:3: undefined: Setpgid
# The missing file is supplied with `go build -overlay` (build.sh's copy itself is left unchanged).
build_argoexec() {
  local w="$WORK/argo-src"
  [[ -f "$w/.src-version" ]] || fail "argoexec: $w missing; run cluster/build.sh argo first"
  local srcver; srcver="$(cat "$w/.src-version")"
  [[ "$srcver" == "$ARGO_VERSION "* ]] || fail "argoexec: $w is '$srcver', expected $ARGO_VERSION"
  local key="argoexec $srcver signal-overlay $GO_VER"
  if stamp_ok argoexec "$key" argoexec; then say "argoexec $ARGO_VERSION: up to date"; return; fi
  local d="$w/workflow/executor/osspecific"
  local overlay="$WORK/argoexec-overlay.json"
  if [[ -f "$d/signal_linux.go" ]]; then
    echo '{"Replace":{}}' > "$overlay"
  else
    printf '{"Replace":{"%s":"%s"}}\n' "$d/signal_linux.go" "$d/signal_darwin.go" > "$overlay"
  fi
  local ld="-s -w" p="$ARGO_MODULE"
  ld+=" -X $p.version=$ARGO_VERSION -X $p.gitTag=$ARGO_VERSION -X $p.gitTreeState=clean"
  ld+=" -X $p.buildDate=1970-01-01T00:00:00Z -X $p.gitCommit=module-proxy-$ARGO_VERSION"
  say "argoexec $ARGO_VERSION: compiling (signal_linux.go supplied by -overlay)"
  ( cd "$w" && go build -trimpath -overlay "$overlay" -ldflags "$ld" -o "$BIN_DIR/argoexec" ./cmd/argoexec )
  echo "  argoexec: $("$BIN_DIR/argoexec" version --short 2>&1 | sed -n 1p)"
  stamp_write argoexec "$key"
}

# ---- node images: OCI archives packed with umoci (no Docker, no registry) -------------------------
# pack_image NAME TAG ENTRYPOINT SRC:DEST... -> $IMG_DIR/NAME_TAG.oci.tar, named localhost/NAME:TAG
# (index.json annotation io.containerd.image.name, which `ctr images import` uses as the image name).
pack_image() {
  local name="$1" tag="$2" entry="$3"; shift 3
  local t="$WORK/img-$name"; rm -rf "$t"; mkdir -p "$t"
  umoci init --layout "$t/oci" >/dev/null
  umoci new --image "$t/oci:$tag"
  umoci unpack --image "$t/oci:$tag" "$t/bundle" >/dev/null
  local f; for f in "$@"; do
    install -D -m 0755 "${f%%:*}" "$t/bundle/rootfs/${f#*:}"
  done
  umoci repack --image "$t/oci:$tag" "$t/bundle" >/dev/null
  umoci config --image "$t/oci:$tag" --os linux --architecture amd64 \
    --config.entrypoint "$entry" --config.workingdir / \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  umoci gc --layout "$t/oci"
  python3 - "$t/oci/index.json" "localhost/$name:$tag" <<'EOF'
import json, sys
p, ref = sys.argv[1], sys.argv[2]
idx = json.load(open(p))
for m in idx["manifests"]:
    m.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(idx, open(p, "w"))
EOF
  tar -C "$t/oci" -cf "$IMG_DIR/.${name}_$tag.oci.tar.tmp" .
  mv "$IMG_DIR/.${name}_$tag.oci.tar.tmp" "$IMG_DIR/${name}_$tag.oci.tar"
  rm -rf "$t"
  echo "  localhost/$name:$tag -> $IMG_DIR/${name}_$tag.oci.tar ($(du -h "$IMG_DIR/${name}_$tag.oci.tar" | cut -f1))"
}
build_images() {
  command -v umoci >/dev/null || fail "images: umoci missing (tools/setup_system.sh node)"
  [[ -x "$BIN_DIR/pause" && -x "$BIN_DIR/argoexec" ]] || fail "images: build pause and argoexec first"
  local key="images $PAUSE_TAG $ARGO_VERSION $(hash_of "$BIN_DIR/pause" "$BIN_DIR/argoexec" "${BASH_SOURCE[0]}")"
  if stamp_ok images "$key" "$IMG_DIR/c2d-pause_$PAUSE_TAG.oci.tar" "$IMG_DIR/c2d-argoexec_$ARGO_VERSION.oci.tar"; then
    say "images: up to date"; return
  fi
  say "images: packing localhost/c2d-pause:$PAUSE_TAG and localhost/c2d-argoexec:$ARGO_VERSION (umoci)"
  pack_image c2d-pause "$PAUSE_TAG" /pause "$BIN_DIR/pause:/pause"
  pack_image c2d-argoexec "$ARGO_VERSION" /bin/argoexec "$BIN_DIR/argoexec:/bin/argoexec"
  stamp_write images "$key"
}

ALL=(containerd runc pause kuberouter localpath kubelet argoexec images)
comps=("$@"); [[ ${#comps[@]} -eq 0 ]] && comps=("${ALL[@]}")
say "go $GO_VER; GOMODCACHE=$GOMODCACHE; output $BIN_DIR (images: $IMG_DIR)"
T0=$SECONDS
for c in "${comps[@]}"; do
  case "$c" in
    containerd) timed containerd build_containerd ;;
    runc) timed runc build_runc ;;
    pause) timed pause build_pause ;;
    kuberouter|kube-router) timed kube-router build_kuberouter ;;
    localpath|local-path-provisioner) timed local-path-provisioner build_localpath ;;
    kubelet) timed kubelet build_kubelet ;;
    argoexec) timed argoexec build_argoexec ;;
    images) timed images build_images ;;
    *) fail "unknown component '$c' (${ALL[*]})" ;;
  esac
done
say "all done in $((SECONDS - T0))s; binaries:"
ls -l "$BIN_DIR" | sed 's/^/  /'
