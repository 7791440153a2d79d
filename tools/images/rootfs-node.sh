#!/usr/bin/env bash
# mmdebstrap customize hook of the c2d-node image (tools/images/build.sh): the project in a venv.
#   rootfs-node.sh ROOTFS WORK
# WORK holds node_modules/ (the Ocean contracts' ABIs), wheels/ (the project's wheel, its pinned dependencies and pip's own wheel, downloaded on
# the host) and node-requirements.txt. pip runs inside the chroot, with the image's own interpreter and
# no network (--no-index): what it installs is what the host downloaded. pip itself is run from its
# wheel and not installed. Writes WORK/freeze.txt (what was installed).
set -euo pipefail
root=$1 work=$2
uid=${C2D_NODE_UID:-10001}
build=/tmp/c2d-build

in_chroot() {  # a clean environment: none of the host's PIP_* / proxy / CA settings reach the image
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}" \
    chroot "$root" "$@"
}

mkdir -p "$root$build"
cp -r "$work/wheels" "$work/node-requirements.txt" "$root$build/"
pip_wheel=$(cd "$root$build/wheels" && ls pip-*.whl)

in_chroot /usr/bin/python3 -m venv --without-pip /opt/c2d
in_chroot /opt/c2d/bin/python "$build/wheels/$pip_wheel/pip" install --quiet --no-index \
  --find-links "$build/wheels" --constraint "$build/node-requirements.txt" \
  --no-compile --no-cache-dir --disable-pip-version-check --root-user-action=ignore c2d-node
in_chroot /opt/c2d/bin/python "$build/wheels/$pip_wheel/pip" freeze --disable-pip-version-check >"$work/freeze.txt"
# byte code for what the node's programs import; also the smoke test (precompile.py says why)
cp "$(dirname "$0")/precompile.py" "$root$build/"
in_chroot env PYTHONDONTWRITEBYTECODE=1 /opt/c2d/bin/python "$build/precompile.py" >"$work/precompile.txt"
rm -rf "$root$build" "$root/opt/c2d/bin/"[Aa]ctivate*
# the Ocean contracts' ABIs (WORK/node_modules, staged by build.sh), read through C2D_NPM_DIR
cp -r "$work/node_modules" "$root/opt/c2d/node_modules"
chmod -R go-w "$root/opt/c2d/node_modules"

# the node's user: numeric, non-root, no login, no password; its home is the data dir
echo "c2d:x:$uid:$uid:c2d node:/var/lib/c2d:/usr/sbin/nologin" >>"$root/etc/passwd"
echo "c2d:x:$uid:" >>"$root/etc/group"
[ ! -e "$root/etc/shadow" ] || echo "c2d:!:1::::::" >>"$root/etc/shadow"
[ ! -e "$root/etc/gshadow" ] || echo "c2d:!::" >>"$root/etc/gshadow"
install -d -m 0755 -o "$uid" -g "$uid" "$root/var/lib/c2d"
