#!/usr/bin/env bash
# Builds the project's container images without Docker or a registry (docs/images.md):
#   localhost/c2d-node:<version of pyproject.toml>  provider, argo engine/watcher, the step programs
#   localhost/c2d-python:3.11                        runtime of algorithms written for python:* images
# each as an OCI layout tarball in .cache/images/ (`ctr -n k8s.io images import` names it after the
# reference), and .cache/images/images.json (reference, manifest digest, archive, sizes, build time).
#
#   tools/images/build.sh [all|node|python] [--force]   build what changed (cached on the inputs' hash)
#   tools/images/build.sh lock                          re-resolve tools/images/node-requirements.txt
#
# How: mmdebstrap makes a Debian bookworm root (variant essential + the image's package list, no docs,
# man pages or locales), a customize hook installs the project into /opt/c2d with pip inside the
# chroot (wheels downloaded on the host, pinned by node-requirements.txt), GNU tar packs it into one
# layer (sorted, numeric owners, mtimes clamped to SOURCE_DATE_EPOCH) and umoci makes the OCI image.
# Needs root (mmdebstrap --mode=root, chroot), mmdebstrap and umoci (tools/setup_system.sh images),
# the project's venv (make setup: its pip downloads the wheels) and network access to Debian and PyPI.
# Environment: C2D_IMAGES_DIR (output, default .cache/images), C2D_IMAGES_MIRROR,
# C2D_IMAGES_SECURITY_MIRROR (Debian mirrors), SOURCE_DATE_EPOCH (default: the last commit's time).
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${C2D_IMAGES_DIR:-$ROOT/.cache/images}
SUITE=bookworm
PY_VERSION=3.11   # bookworm's python3; the tag of c2d-python and the target of the wheels
MIRROR=${C2D_IMAGES_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${C2D_IMAGES_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
REGISTRY=localhost
NODE_UID=10001
LOCK=$HERE/node-requirements.txt
HOST_PY=$ROOT/.venv/bin/python

log() { printf '[images] %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%d s' $((SECONDS - $1)); }

# mount points under folder $1 (a root file system whose mmdebstrap was killed keeps the host's /dev
# nodes, /proc and /sys mounted in it)
mounted_under() { findmnt -rno TARGET | awk -v dir="$(realpath -m "$1")/" 'index($0 "/", dir) == 1' | sort -r; }
# removes a work folder without ever following such a mount into the host's file systems
remove_work() {
  local dir=$1 left
  [ -e "$dir" ] || return 0
  left=$(mounted_under "$dir")
  if [ -n "$left" ]; then
    log "unmounting what an interrupted build left mounted under $dir"
    xargs -r -n1 umount --lazy <<<"$left" || true
    left=$(mounted_under "$dir")
    [ -z "$left" ] || die "still mounted under $dir, not removing it: $left"
  fi
  rm -rf --one-file-system "$dir"
}

what=all force=0
for arg in "$@"; do
  case $arg in
    all | node | python | lock) what=$arg ;;
    --force) force=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: tools/images/build.sh [all|node|python|lock] [--force])" ;;
  esac
done

# --- preconditions -----------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "building images needs root (mmdebstrap --mode=root and chroot); run it as root"
for tool in mmdebstrap umoci tar; do
  command -v "$tool" >/dev/null || die "$tool not found; install it with: tools/setup_system.sh images"
done
[ -x "$HOST_PY" ] || die "$HOST_PY not found; run 'make setup' first (its pip downloads the wheels)"
case $(dpkg --print-architecture) in
  amd64) PIP_ARCH=x86_64 ;;
  arm64) PIP_ARCH=aarch64 ;;
  *) die "unsupported architecture $(dpkg --print-architecture) (amd64 and arm64 are)" ;;
esac
VERSION=$("$HOST_PY" "$HERE/oci.py" version "$ROOT/pyproject.toml")
[[ $VERSION =~ ^[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}$ ]] || die "pyproject.toml's version '$VERSION' is not a valid image tag"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$OUT"
# one build at a time per output folder (make images and the tests share it)
exec 9>"$OUT/.lock"
if ! flock --nonblock 9; then
  log "waiting for another build in $OUT ..."
  flock 9
fi

# wheels for the image's interpreter (CPython 3.11, glibc 2.36), whatever the host's Python is
pip_target=(--only-binary=:all: --python-version "$PY_VERSION" --implementation cp
  --abi "cp${PY_VERSION/./}" --abi abi3 --abi none)
for minor in $(seq 36 -1 5); do pip_target+=(--platform "manylinux_2_${minor}_$PIP_ARCH"); done
pip_target+=(--platform "manylinux2014_$PIP_ARCH" --platform "manylinux2010_$PIP_ARCH" --platform "manylinux1_$PIP_ARCH")

# a Debian package list (one per line, # comments), comma-separated
packages() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1" | tr -d ' \t' | paste -sd, -; }

# The project's source, as the image gets it: the tracked and untracked-but-not-ignored files of its
# packages, pyproject.toml and a stub README (pyproject's `readme`; the real one would make every README
# edit a new image).
stage_source() {
  local src=$1
  rm -rf "$src" && mkdir -p "$src"
  cp "$ROOT/pyproject.toml" "$src/"
  printf '# c2d-node\n\nArgo-native Compute-to-Data node; see README.md of the repository.\n' >"$src/README.md"
  (cd "$ROOT" && git ls-files -co --exclude-standard -z -- c2d steps workflows provider node |
    while IFS= read -r -d '' file; do if [ -f "$file" ]; then printf '%s\0' "$file"; fi; done |
    tar --null -T - -cf -) | tar -xf - -C "$src"
}

# the Ocean contracts' ABIs (npm @oceanprotocol/contracts, as `make setup` installed it): the provider reads
# them (C2D_NPM_DIR); package.json and artifacts/ only, 2.5 MB; and Escrow's artifacts from the 2.6.0 alias
CONTRACTS=$ROOT/node_modules/@oceanprotocol/contracts
ESCROW=$ROOT/node_modules/@oceanprotocol/contracts-escrow
stage_contracts() {
  local dest=$1/@oceanprotocol/contracts escrow_dest=$1/@oceanprotocol/contracts-escrow/artifacts/contracts
  [ -f "$CONTRACTS/package.json" ] && [ -d "$CONTRACTS/artifacts" ] && [ -d "$ESCROW/artifacts/contracts/escrow" ] ||
    die "$CONTRACTS or $ESCROW not found; run 'make setup' first (npm ci installs the Ocean contracts)"
  rm -rf "$1" && mkdir -p "$dest" "$escrow_dest"
  cp -r "$CONTRACTS/package.json" "$CONTRACTS/artifacts" "$dest/"
  cp "$ESCROW/package.json" "$1/@oceanprotocol/contracts-escrow/"
  cp -r "$ESCROW/artifacts/contracts/escrow" "$escrow_dest/"
}

tree_hash() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64; }

project_wheel() {  # the project's wheel (pure Python) from the staged source, into $2
  local src=$1 dest=$2
  "$HOST_PY" -m pip wheel --quiet --no-deps --disable-pip-version-check --wheel-dir "$dest" "$src" >/dev/null
  ls "$dest"/c2d_node-*.whl
}

# --- lock: re-resolve the pins ---------------------------------------------------------------------------
if [ "$what" = lock ]; then
  t0=$SECONDS work=$OUT/work/lock
  remove_work "$work" && mkdir -p "$work/wheels"
  stage_source "$work/src"
  wheel=$(project_wheel "$work/src" "$work/wheels")
  log "resolving the runtime dependencies of $(basename "$wheel") for CPython $PY_VERSION/$PIP_ARCH ..."
  "$HOST_PY" -m pip install --quiet --dry-run --ignore-installed --disable-pip-version-check \
    --report "$work/report.json" "${pip_target[@]}" "$wheel"
  "$HOST_PY" "$HERE/oci.py" lock "$work/report.json" "$LOCK" | sed 's/^/[images] /'
  log "lock done in $(elapsed "$t0"); rebuild with: tools/images/build.sh node"
  exit 0
fi

# --- one image ---------------------------------------------------------------------------------------------
# build_image NAME TAG PACKAGE_LIST USER ENTRYPOINT CMD WORKDIR PORTS ENV...
build_image() {
  local name=$1 tag=$2 package_list=$3 user=$4 entrypoint=$5 cmd=$6 workdir=$7 ports=$8
  shift 8
  local envs=("$@")
  local ref=$REGISTRY/$name:$tag
  local archive=$OUT/$name-$tag.oci.tar stamp=$OUT/.$name.key work=$OUT/work/$name
  local t0=$SECONDS t

  remove_work "$work" && mkdir -p "$work"
  local key_inputs=("$HERE/build.sh" "$HERE/oci.py" "$HERE/rootfs-trim.sh" "$package_list")
  if [ "$name" = c2d-node ]; then
    stage_source "$work/src"
    stage_contracts "$work/node_modules"
    key_inputs+=("$HERE/rootfs-node.sh" "$HERE/precompile.py" "$LOCK")
  fi
  local key
  key=$({
    printf '%s\n' "$ref" "$SUITE" "$MIRROR" "$SECURITY_MIRROR" "$user" "$entrypoint" "$cmd" "$workdir" "$ports" "${envs[@]}"
    sha256sum "${key_inputs[@]}" | cut -c1-64
    [ "$name" != c2d-node ] || tree_hash "$work/src"
    [ "$name" != c2d-node ] || tree_hash "$work/node_modules"
  } | sha256sum | cut -c1-64)
  if [ "$force" = 0 ] && [ -f "$archive" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ] &&
    grep -q "\"reference\": \"$ref\"" "$OUT/images.json" 2>/dev/null; then
    remove_work "$work"
    log "$ref up to date ($(du -h "$archive" | cut -f1) $archive; inputs unchanged)"
    return
  fi
  log "building $ref ..."

  local hooks=()
  if [ "$name" = c2d-node ]; then
    t=$SECONDS
    mkdir -p "$work/wheels"
    local wheel pip_version
    wheel=$(project_wheel "$work/src" "$work/wheels")
    pip_version=$("$HOST_PY" -m pip --version | cut -d' ' -f2)
    cp "$LOCK" "$work/node-requirements.txt"
    if ! "$HOST_PY" -m pip download --quiet --disable-pip-version-check --dest "$work/wheels" \
      "${pip_target[@]}" --constraint "$LOCK" "$wheel" "pip==$pip_version" >"$work/pip.log" 2>&1; then
      cat "$work/pip.log" >&2
      die "pip could not download the wheels of $ref; if pyproject.toml's dependencies changed, run: tools/images/build.sh lock"
    fi
    log "  wheels: $(find "$work/wheels" -name '*.whl' | wc -l) ($(du -sh "$work/wheels" | cut -f1)) in $(elapsed "$t")"
    hooks+=(--customize-hook="$(printf '%q "$1" %q' "$HERE/rootfs-node.sh" "$work")")
  fi
  hooks+=(--customize-hook="$(printf '%q "$1"' "$HERE/rootfs-trim.sh")")

  t=$SECONDS
  local rootfs=$work/rootfs
  if ! C2D_NODE_UID=$NODE_UID nice -n 10 mmdebstrap --mode=root --variant=essential --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$(packages "$package_list")" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    "${hooks[@]}" \
    "$SUITE" "$rootfs" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" \
    >"$work/mmdebstrap.log" 2>&1; then
    tail -n 30 "$work/mmdebstrap.log" >&2
    die "mmdebstrap failed for $ref (full log: $work/mmdebstrap.log)"
  fi
  [ -z "$(mounted_under "$rootfs")" ] || die "mmdebstrap left file systems mounted under $rootfs: $(mounted_under "$rootfs")"
  # the runtime mounts its own /dev, /proc, /sys, /run; the root's own device nodes are not shipped
  find "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" "$rootfs/run" -mindepth 1 -delete
  log "  root file system (mmdebstrap + hooks): $(du -sh "$rootfs" | cut -f1) in $(elapsed "$t")"
  [ ! -f "$work/precompile.txt" ] || log "  $(cat "$work/precompile.txt")"
  if [ "$name" = c2d-node ]; then
    local drift
    drift=$("$HOST_PY" "$HERE/oci.py" check-lock "$LOCK" "$work/freeze.txt")
    [ -z "$drift" ] || printf '[images] warning: the image differs from %s (run tools/images/build.sh lock):\n%s\n' \
      "$LOCK" "$drift" >&2
  fi
  local debian python_version unpacked
  debian=$(cat "$rootfs/etc/debian_version")
  python_version=$(chroot "$rootfs" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
  [[ $python_version == "$PY_VERSION".* ]] || die "$SUITE's python3 is $python_version, not $PY_VERSION"
  unpacked=$(du -sb "$rootfs" | cut -f1)

  t=$SECONDS
  tar --create --file "$work/layer.tar" --directory "$rootfs" --sort=name --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
  local layout=$work/oci config_args=()
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci raw add-layer --image "$layout:$tag" --history.created="$CREATED" \
    --history.created_by="tools/images/build.sh: mmdebstrap $SUITE + $(packages "$package_list")" "$work/layer.tar"
  config_args=(--config.user="$user" --config.workingdir="$workdir" --config.cmd="$cmd")
  [ -z "$entrypoint" ] || config_args+=(--config.entrypoint="$entrypoint")
  for port in $ports; do config_args+=(--config.exposedports="$port"); done
  for env in "${envs[@]}"; do config_args+=(--config.env="$env"); done
  umoci config --image "$layout:$tag" --no-history --created="$CREATED" "${config_args[@]}" \
    --config.label="org.opencontainers.image.title=$name" \
    --config.label="org.opencontainers.image.version=$tag" \
    --config.label="org.opencontainers.image.created=$CREATED" \
    --config.label="org.opencontainers.image.licenses=Apache-2.0" \
    --config.label="org.opencontainers.image.base.name=debian:$SUITE ($debian)"
  umoci gc --layout "$layout"
  local digest
  digest=$("$HOST_PY" "$HERE/oci.py" name-image "$layout" "$ref")
  tar --create --file "$archive.tmp" --directory "$layout" --sort=name --numeric-owner --owner=0 --group=0 --mode=a+rX \
    --mtime="@$SOURCE_DATE_EPOCH" --format=posix --pax-option=delete=atime,delete=ctime \
    oci-layout index.json blobs
  mv "$archive.tmp" "$archive"
  log "  packed (tar + umoci, gzip): $(du -h "$archive" | cut -f1) in $(elapsed "$t")"

  "$HOST_PY" "$HERE/oci.py" record "$OUT/images.json" "$name" "tag=$tag" "reference=$ref" "digest=$digest" \
    "archive=${archive#"$ROOT"/}" "size_packed=$(stat -c %s "$archive")" "size_unpacked=$unpacked" \
    "build_seconds=$((SECONDS - t0))" "created=$CREATED" "debian=$debian" "python=$python_version" \
    "user=$user" "inputs=$key"
  echo "$key" >"$stamp"
  remove_work "$work"
  log "$ref built in $(elapsed "$t0"): $digest"
}

PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ "$what" = all ] || [ "$what" = node ]; then
  build_image c2d-node "$VERSION" "$HERE/node.packages" "$NODE_UID:$NODE_UID" c2d --help /var/lib/c2d 8030/tcp \
    "PATH=/opt/c2d/bin:${PATH_ENV#PATH=}" LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    C2D_DATA_DIR=/var/lib/c2d C2D_NPM_DIR=/opt/c2d/node_modules
fi
if [ "$what" = all ] || [ "$what" = python ]; then
  build_image c2d-python "$PY_VERSION" "$HERE/python.packages" 65534:65534 "" python3 / "" "$PATH_ENV" LANG=C.UTF-8
fi
log "images: $OUT/images.json"
