#!/usr/bin/env bash
# Tells what runs in the cluster of $MINIK8S_HOME (default ~/.minik8s), as its supervisord sees it.
# Exit 0 when every program is RUNNING, 3 when the cluster is down or a program is not running.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [ ! -x .venv/bin/python ]; then
    echo "status.sh: no .venv yet: run make up" >&2
    exit 3
fi
exec .venv/bin/python -m minik8s.cluster status
