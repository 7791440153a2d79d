#!/usr/bin/env bash
# Installs the Debian packages the node needs, only when they are missing:
#   postgresql (server binaries for the embedded database), bubblewrap (the local engine's sandbox),
#   util-linux (unshare, to run PostgreSQL as root inside a user namespace; mount), e2fsprogs (each job's
#   own file system), keyutils (a new session keyring per step), libseccomp2 (the sandboxes' seccomp
#   filter), python-is-python3 (below), mmdebstrap and umoci (the container images without Docker: `make
#   images`, and tests/images, which `make test` runs: about 1.5 minutes cold, docs/images.md).
# Then registers the host ids the job sandboxes run as (tools/setup_sandbox_ids.sh).
# `setup_system.sh bench` also installs what the benchmarks drive the node with: wrk, curl, GNU time.
# `setup_system.sh images` (what `make images` runs) checks just the same: mmdebstrap (a Debian root file
#   system without Docker) and umoci (packs it as an OCI image) are in the default list.
# `setup_system.sh node` also installs what the real Kubernetes node needs (cluster/build-node.sh, cluster/node.sh):
#   libseccomp-dev (runc's seccomp), containernetworking-plugins (bridge, host-local), iptables, nftables,
#   ipset, conntrack (kubelet, kube-router), socat (the apiserver relay), gcc (pause), umoci (node images).
set -euo pipefail
here="$(dirname "$0")"

missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /sbin/mkfs.ext4 ] || [ -x /usr/sbin/mkfs.ext4 ] || missing+=(e2fsprogs)
command -v keyctl >/dev/null 2>&1 || missing+=(keyutils)
ls /usr/lib/*/libseccomp.so.2 /lib/*/libseccomp.so.2 >/dev/null 2>&1 || missing+=(libseccomp2)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
# The python:* runtimes run Ocean's `python $ALGO` with the interpreter the venv was made from; the
# distribution's has a `python` command only with python-is-python3 (the python:* images have one).
venv_python="$(dirname "$0")/../.venv/bin/python"
if [ -x "$venv_python" ] && [ "$("$venv_python" -c 'import sys; print(sys.base_prefix)')" = /usr ]; then
  [ -e /usr/bin/python ] || missing+=(python-is-python3)
fi
if [ "${1:-}" = bench ]; then
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ -x /usr/bin/time ] || missing+=(time)
fi
if [ "${1:-}" = node ]; then
  # the real Kubernetes node (cluster/build-node.sh, cluster/node.sh; cluster/README.md "Real node")
  [ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
  [ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
  command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
  command -v ipset >/dev/null 2>&1 || [ -x /usr/sbin/ipset ] || missing+=(ipset)
  command -v socat >/dev/null 2>&1 || missing+=(socat)
  command -v conntrack >/dev/null 2>&1 || [ -x /usr/sbin/conntrack ] || missing+=(conntrack)
  command -v gcc >/dev/null 2>&1 || missing+=(gcc)
  command -v umoci >/dev/null 2>&1 || missing+=(umoci)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exec "$here/setup_sandbox_ids.sh"
fi
echo "[setup] installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "error: missing Debian packages (${missing[*]}) and not root; run: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/c2d-apt.log 2>&1; then
  $SUDO apt-get update >>/tmp/c2d-apt.log 2>&1 || true
  if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/c2d-apt.log 2>&1; then
    echo "error: apt-get could not install ${missing[*]}; see /tmp/c2d-apt.log" >&2
    exit 1
  fi
fi
echo "[setup] Debian packages installed"
exec "$here/setup_sandbox_ids.sh"
