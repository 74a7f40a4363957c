#!/usr/bin/env bash
# Stops the cluster in $MINIK8S_HOME (default ~/.minik8s): SIGTERM to each daemon it started,
# a bounded wait, then SIGKILL. Only processes recorded under run/ whose command line and
# environment show they belong to this MINIK8S_HOME are signalled. Data stays, unless
# MINIK8S_PURGE=1 (what `make clean` sets): then $MINIK8S_HOME is removed too.
#
#   MINIK8S_STOP_GRACE   seconds between SIGTERM and SIGKILL (default 15)
set -euo pipefail

# shellcheck source=scripts/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

if [ ! -d "$MINIK8S_HOME" ]; then
    echo "no cluster in $MINIK8S_HOME"
    exit 0
fi

# Reverse start order: the apiserver goes before the etcd it writes to.
for name in $(echo "$DAEMONS" | tr ' ' '\n' | tac); do
    stop_daemon "$name" "${MINIK8S_STOP_GRACE:-15}"
done
echo "minik8s in $MINIK8S_HOME is down"

if [ "${MINIK8S_PURGE:-0}" = 1 ]; then
    # Remove only a folder that is plainly a minik8s home: never /, never $HOME itself.
    if [ "$MINIK8S_HOME" = / ] || [ "$MINIK8S_HOME" = "$(cd ~ && pwd -P)" ]; then
        echo "refusing to remove $MINIK8S_HOME" >&2
        exit 1
    fi
    if [ -f "$CLUSTER_ENV" ] || [ -z "$(ls -A "$MINIK8S_HOME")" ]; then
        rm -rf "$MINIK8S_HOME"
        echo "removed $MINIK8S_HOME"
    else
        echo "$MINIK8S_HOME has no cluster.env: not removing it" >&2
        exit 1
    fi
fi
