#!/usr/bin/env bash
# Same as: cluster/cluster.sh up
exec "$(dirname "${BASH_SOURCE[0]}")/cluster.sh" up "$@"
