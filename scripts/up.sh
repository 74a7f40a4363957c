#!/usr/bin/env bash
# Starts a single-node minik8s cluster under $MINIK8S_HOME (default ~/.minik8s): etcd, then the
# apiserver. Re-running it on a running cluster is harmless: it starts only what is missing.
#
#   MINIK8S_HOME             where the cluster keeps everything (see scripts/cluster-lib.sh)
#   MINIK8S_ETCD_PORT        etcd client port   (default 23790)
#   MINIK8S_ETCD_PEER_PORT   etcd peer port     (default 23800)
#   MINIK8S_API_PORT         apiserver port     (default 18080, plain http on 127.0.0.1)
#   MINIK8S_APISERVER_ARGS   extra apiserver flags, e.g. "--compaction-interval 300"
#   MINIK8S_START_TIMEOUT    seconds to wait for each daemon to become healthy (default 60)
#   MINIK8S_SKIP_DEPS=1      do not run scripts/install-deps.sh first
set -euo pipefail

# shellcheck source=scripts/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

if [ "${MINIK8S_SKIP_DEPS:-0}" != 1 ]; then
    "$REPO/scripts/install-deps.sh"
fi

mkdir -p "$MINIK8S_HOME"
resolve_home
cd "$REPO"
load_ports
START_TIMEOUT=${MINIK8S_START_TIMEOUT:-60}

# A running cluster keeps the ports it was started with: changing them needs `make down` first.
running=""
for name in $DAEMONS; do
    [ -z "$(our_pid "$name")" ] || running="$running $name"
done
if [ -n "$running" ]; then
    for var in $PORT_VARS; do
        stored=$(stored_port "$var")
        if [ -n "$stored" ] && [ "$stored" != "${!var}" ]; then
            echo "the cluster in $MINIK8S_HOME runs ($running ) with $var=$stored;" \
                 "run 'make down' before changing it to ${!var}" >&2
            exit 1
        fi
    done
fi
save_ports

refuse_busy_port() {  # refuse_busy_port PORT WHAT
    if port_in_use "$1"; then
        echo "port $1 ($2) is taken by a process that is not this cluster's;" \
             "pick another with the MINIK8S_*_PORT variables" >&2
        exit 1
    fi
}

ensure_etcd() {
    local pid etcd
    pid=$(our_pid etcd)
    if [ -n "$pid" ]; then
        wait_for etcd "$START_TIMEOUT" etcd_healthy
        echo "etcd already running (pid $pid) at $ETCD_URL"
        return 0
    fi
    refuse_busy_port "$MINIK8S_ETCD_PORT" "etcd client"
    refuse_busy_port "$MINIK8S_ETCD_PEER_PORT" "etcd peer"
    etcd=$(command -v etcd || echo /usr/bin/etcd)
    # Debian's etcd 3.4 refuses to start on arm64 unless told it may.
    if [ "$(uname -m)" = aarch64 ]; then
        export ETCD_UNSUPPORTED_ARCH=arm64
    fi
    local peer=http://127.0.0.1:$MINIK8S_ETCD_PEER_PORT
    start_daemon etcd "$etcd" --name minik8s --data-dir "$MINIK8S_HOME/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "minik8s=$peer" --logger zap --log-level warn
    wait_for etcd "$START_TIMEOUT" etcd_healthy
    echo "etcd started (pid $(our_pid etcd)) at $ETCD_URL"
}

ensure_apiserver() {
    local pid
    pid=$(our_pid apiserver)
    if [ -n "$pid" ]; then
        wait_for apiserver "$START_TIMEOUT" apiserver_ready
        echo "apiserver already running (pid $pid) at $API_URL"
        return 0
    fi
    refuse_busy_port "$MINIK8S_API_PORT" "apiserver"
    # shellcheck disable=SC2086  # MINIK8S_APISERVER_ARGS is a list of flags
    start_daemon apiserver "$REPO/.venv/bin/python" -m apiserver.main \
        --etcd-endpoints "$ETCD_ENDPOINT" --bind-address 127.0.0.1 --port "$MINIK8S_API_PORT" \
        ${MINIK8S_APISERVER_ARGS:-}
    wait_for apiserver "$START_TIMEOUT" apiserver_ready
    echo "apiserver started (pid $(our_pid apiserver)) at $API_URL"
}

write_file() {  # write_file PATH: stdin to PATH, atomically
    cat > "$1.tmp"
    mv -f "$1.tmp" "$1"
}

write_client_configs() {
    # A loopback development cluster: plain http, no credentials.
    write_file "$MINIK8S_HOME/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: minik8s
  cluster:
    server: $API_URL
contexts:
- name: minik8s
  context:
    cluster: minik8s
    namespace: default
    user: minik8s
current-context: minik8s
users:
- name: minik8s
  user: {}
preferences: {}
KUBECONFIG
    write_file "$MINIK8S_HOME/config" <<CONFIG
# minictl's settings for the cluster in $MINIK8S_HOME (written by scripts/up.sh)
server: $API_URL
CONFIG
}

ensure_etcd
ensure_apiserver
write_client_configs

cat <<USAGE
minik8s is up: apiserver $API_URL, etcd $ETCD_URL, state in $MINIK8S_HOME
  export KUBECONFIG=$MINIK8S_HOME/kubeconfig; kubectl get namespaces
  .venv/bin/minictl get namespaces        (reads $MINIK8S_HOME/config)
  make down                               (stops it; data stays until 'make clean')
USAGE
