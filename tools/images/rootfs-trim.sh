#!/usr/bin/env bash
# mmdebstrap customize hook of every image (tools/images/build.sh): drops what a container never uses.
# Documentation, man pages and locales are never unpacked (dpkg path-exclude, see build.sh); here go
# the caches and logs of the build and the contents of the folders a container runtime mounts over.
set -euo pipefail
root=$1
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/ldconfig/aux-cache \
  "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/log/* \
  "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
find "$root/usr/share/doc" -mindepth 1 -depth ! -name copyright \( -type f -o -type l -o -type d -empty \) -delete 2>/dev/null || true
