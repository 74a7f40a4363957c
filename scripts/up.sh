#!/usr/bin/env bash
# Starts (or repairs) the single-node cluster under $MINIK8S_HOME (default ~/.minik8s): its own
# supervisord runs etcd, containerd, the registry, the apiserver, and the scheduler and kubelet when
# they exist. Re-running it is harmless: it starts only what is stopped or dead (python -m
# minik8s.cluster up; docs/cluster.md, docs/node.md).
#
#   MINIK8S_HOME             where the cluster keeps everything (short: unix sockets live under it)
#   MINIK8S_*_PORT           ETCD, ETCD_PEER, API, REGISTRY, KUBELET (defaults: docs/node.md)
#   MINIK8S_POD_CIDR         the node's pod CIDR (default 10.88.<n>.0/24, n from the cluster id)
#   MINIK8S_APISERVER_ARGS   extra apiserver flags, e.g. "--compaction-interval 300"
#   MINIK8S_START_TIMEOUT    seconds to wait for the daemons to answer (default 60)
#   MINIK8S_SKIP_DEPS=1      do not run scripts/install-deps.sh first
#   MINIK8S_SKIP_SEED=1      do not seed the cluster images into the registry
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${MINIK8S_SKIP_DEPS:-0}" != 1 ]; then
    bash "$REPO/scripts/install-deps.sh"
fi
cd "$REPO"
exec .venv/bin/python -m minik8s.cluster up
