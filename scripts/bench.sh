#!/usr/bin/env bash
# Runs every benchmarks/bench_*.py with the venv's python against a cluster of its own (a fresh
# MINIK8S_HOME on free loopback ports, removed afterwards). Fails if any benchmark fails.
#
# Each benchmark gets in its environment:
#   MINIK8S_HOME, KUBECONFIG        the cluster's folder and kubeconfig (minictl reads $MINIK8S_HOME/config)
#   MINIK8S_SERVER                  the apiserver URL, e.g. http://127.0.0.1:40123
#   MINIK8S_ETCD_ENDPOINTS          etcd, host:port
#   MINIK8S_BENCH_TIMEOUT           its time limit in seconds (default 600), enforced here
#
#   scripts/bench.sh [NAME...]      only benchmarks/bench_NAME.py
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
bash scripts/install-deps.sh || exit 1

benches=()
if [ $# -gt 0 ]; then
    for name in "$@"; do
        benches+=("benchmarks/bench_${name#bench_}")
        case ${benches[-1]} in *.py) ;; *) benches[-1]=${benches[-1]}.py ;; esac
    done
else
    shopt -s nullglob
    benches=(benchmarks/bench_*.py)
    shopt -u nullglob
fi
if [ ${#benches[@]} -eq 0 ]; then
    echo "bench.sh: no benchmarks/bench_*.py yet: nothing to run"
    exit 0
fi

BENCH_TIMEOUT=${MINIK8S_BENCH_TIMEOUT:-600}
home=$(mktemp -d /tmp/mk8s-bench-XXXXXX)
# Three distinct free loopback ports, held open together so they cannot repeat.
read -r etcd_port peer_port api_port < <(.venv/bin/python - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
export MINIK8S_HOME=$home MINIK8S_ETCD_PORT=$etcd_port MINIK8S_ETCD_PEER_PORT=$peer_port \
    MINIK8S_API_PORT=$api_port MINIK8S_SKIP_DEPS=1

cleanup() {
    MINIK8S_PURGE=1 bash scripts/down.sh >/dev/null || echo "bench.sh: could not stop the cluster in $home" >&2
}
trap cleanup EXIT

bash scripts/up.sh || exit 1
export KUBECONFIG=$home/kubeconfig MINIK8S_SERVER=http://127.0.0.1:$api_port \
    MINIK8S_ETCD_ENDPOINTS=127.0.0.1:$etcd_port MINIK8S_BENCH_TIMEOUT=$BENCH_TIMEOUT

failed=()
for bench in "${benches[@]}"; do
    echo "== $bench"
    if [ ! -f "$bench" ]; then
        echo "bench.sh: no such benchmark: $bench" >&2
        failed+=("$bench")
        continue
    fi
    rc=0
    timeout --signal=INT --kill-after=30 "$BENCH_TIMEOUT" .venv/bin/python "$bench" </dev/null || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "bench.sh: $bench failed (exit $rc)" >&2
        failed+=("$bench")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "bench.sh: ${#failed[@]} of ${#benches[@]} failed: ${failed[*]}" >&2
    exit 1
fi
echo "bench.sh: all ${#benches[@]} benchmarks passed"
