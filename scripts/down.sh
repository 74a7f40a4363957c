#!/usr/bin/env bash
# Stops the cluster in $MINIK8S_HOME (default ~/.minik8s): its supervisord stops every program
# (SIGTERM, MINIK8S_STOP_GRACE seconds, default 15, then SIGKILL), then what the daemons leave on
# the host goes: leftover processes, the cluster's cgroup folders, mounts under the home, pod
# network namespaces, the bridge, its iptables chains. Data stays, unless MINIK8S_PURGE=1 (what
# `make clean` sets): then $MINIK8S_HOME is removed too.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [ ! -x .venv/bin/python ]; then
    echo "down.sh: no .venv yet, so no cluster was started from this checkout" >&2
    exit 0
fi
if [ "${MINIK8S_PURGE:-0}" = 1 ]; then
    exec .venv/bin/python -m minik8s.cluster purge
fi
exec .venv/bin/python -m minik8s.cluster down
