#!/usr/bin/env bash
# Same as: cluster/cluster.sh down
exec "$(dirname "${BASH_SOURCE[0]}")/cluster.sh" down "$@"
