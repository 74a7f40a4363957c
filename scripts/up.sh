#!/usr/bin/env bash
# Starts (or repairs) the single-node cluster under $MINIK8S_HOME (default ~/.minik8s): its own
# supervisord runs etcd, containerd, the registry, the apiserver, and the scheduler, kubelet and
# serverless gateway when they exist. Re-running it is harmless: it starts only what is stopped or
# dead (python -m minik8s.cluster up; docs/cluster.md, docs/node.md). Then, when the gateway runs, it
# deploys the example function add (examples/functions/add.py) and prints how to call it.
#
#   MINIK8S_HOME             where the cluster keeps everything (short: unix sockets live under it)
#   MINIK8S_*_PORT           ETCD, ETCD_PEER, API, REGISTRY, KUBELET, GATEWAY (defaults: docs/cluster.md)
#   MINIK8S_POD_CIDR         the node's pod CIDR (default 10.88.<n>.0/24, n from the cluster id)
#   MINIK8S_APISERVER_ARGS   extra apiserver flags, e.g. "--compaction-interval 300"
#   MINIK8S_START_TIMEOUT    seconds to wait for the daemons to answer (default 60)
#   MINIK8S_SKIP_DEPS=1      do not run scripts/install-deps.sh first
#   MINIK8S_GATEWAY_ARGS     extra minik8s-gateway flags, e.g. "--stable-window 10"
#   MINIK8S_SKIP_SEED=1      do not seed the cluster images into the registry (nor deploy the example)
#   MINIK8S_SKIP_EXAMPLE=1   do not deploy the example function
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${MINIK8S_SKIP_DEPS:-0}" != 1 ]; then
    bash "$REPO/scripts/install-deps.sh"
fi
cd "$REPO"
.venv/bin/python -m minik8s.cluster up

# The example function: created on the first run, updated on later ones (the same code is the same
# digest and image, so nothing changes). Without the seeded base image there is nothing to build on.
if [ "${MINIK8S_SKIP_EXAMPLE:-0}" = 1 ] || [ "${MINIK8S_SKIP_SEED:-0}" = 1 ]; then
    exit 0
fi
home=$(.venv/bin/python -c 'from minik8s.cluster.layout import resolve_home; print(resolve_home())')
if ! grep -q '^\[program:gateway\]' "$home/supervisord.conf" 2>/dev/null; then
    exit 0  # no gateway in this cluster (not in the tree yet, or MINIK8S_WITHOUT=gateway)
fi
minictl=(env -u MINIK8S_SERVER MINIK8S_HOME="$home" .venv/bin/python -m minictl.main -n default)
if "${minictl[@]}" get functions add -o name >/dev/null 2>&1; then verb=update; else verb=create; fi
echo "deploying the example function add (examples/functions/add.py)"
if ! "${minictl[@]}" function "$verb" add --file examples/functions/add.py; then
    echo "up.sh: the cluster is up, but the example function add did not deploy (above: why);" \
         "MINIK8S_SKIP_EXAMPLE=1 leaves it out" >&2
    exit 1
fi
