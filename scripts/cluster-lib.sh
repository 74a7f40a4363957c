# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it
# Shared by up.sh, down.sh and bench.sh: where a cluster lives, its ports, and its processes.
# Source it; it defines functions and variables only.
#
# $MINIK8S_HOME (default ~/.minik8s) holds everything of one cluster:
#   cluster.env   the ports it was started with (reused by later runs)
#   etcd/         etcd's data          logs/   one log per daemon
#   run/*.pid     daemon pids          kubeconfig, config   how kubectl and minictl reach it
#
# Port precedence: an explicit MINIK8S_*_PORT in the environment, else cluster.env, else default.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

MINIK8S_HOME=${MINIK8S_HOME:-$HOME/.minik8s}

# resolve_home: makes MINIK8S_HOME absolute (symlinks resolved once it exists).
resolve_home() {
    if [ -d "$MINIK8S_HOME" ]; then
        MINIK8S_HOME=$(cd "$MINIK8S_HOME" && pwd -P)
    else
        case $MINIK8S_HOME in
            /*) ;;
            *) MINIK8S_HOME=$PWD/$MINIK8S_HOME ;;
        esac
    fi
    # Later daemons put unix sockets under $MINIK8S_HOME/run (at most 108 bytes a path).
    if [ "${#MINIK8S_HOME}" -gt 64 ]; then
        echo "MINIK8S_HOME is too long (${#MINIK8S_HOME} > 64 characters): $MINIK8S_HOME" >&2
        exit 1
    fi
    export MINIK8S_HOME
    CLUSTER_ENV=$MINIK8S_HOME/cluster.env
    RUN_DIR=$MINIK8S_HOME/run
    LOG_DIR=$MINIK8S_HOME/logs
}
resolve_home

# Defaults stay clear of the system ones (etcd 2379/2380, registry 5000, kubectl proxy 8001)
# and below the kernel's ephemeral range (32768+), where tests pick their free ports.
DEFAULT_ETCD_PORT=23790
DEFAULT_ETCD_PEER_PORT=23800
DEFAULT_API_PORT=18080

PORT_VARS="MINIK8S_ETCD_PORT MINIK8S_ETCD_PEER_PORT MINIK8S_API_PORT"

# stored_port VAR: the value cluster.env holds for VAR, or nothing.
stored_port() {
    [ -f "$CLUSTER_ENV" ] || return 0
    sed -n "s/^$1=\([0-9][0-9]*\)\$/\1/p" "$CLUSTER_ENV" | tail -n 1
}

load_ports() {
    local var value default
    for var in $PORT_VARS; do
        case $var in
            MINIK8S_ETCD_PORT) default=$DEFAULT_ETCD_PORT ;;
            MINIK8S_ETCD_PEER_PORT) default=$DEFAULT_ETCD_PEER_PORT ;;
            MINIK8S_API_PORT) default=$DEFAULT_API_PORT ;;
        esac
        value=${!var:-}
        [ -n "$value" ] || value=$(stored_port "$var")
        [ -n "$value" ] || value=$default
        case $value in
            ''|*[!0-9]*) echo "$var must be a port number, not '$value'" >&2; exit 1 ;;
        esac
        if [ "$value" -lt 1 ] || [ "$value" -gt 65535 ]; then
            echo "$var must be a port number, not '$value'" >&2
            exit 1
        fi
        printf -v "$var" '%s' "$value"
    done
    ETCD_ENDPOINT=127.0.0.1:$MINIK8S_ETCD_PORT
    ETCD_URL=http://$ETCD_ENDPOINT
    API_URL=http://127.0.0.1:$MINIK8S_API_PORT
}

save_ports() {
    local tmp=$CLUSTER_ENV.tmp var
    {
        echo "# minik8s cluster in $MINIK8S_HOME; written by scripts/up.sh"
        for var in $PORT_VARS; do
            echo "$var=${!var}"
        done
    } > "$tmp"
    mv -f "$tmp" "$CLUSTER_ENV"
}

# Daemons this script family manages, in start order, with the word their command line carries.
DAEMONS="etcd apiserver"
daemon_marker() {
    case $1 in
        etcd) echo "etcd" ;;
        apiserver) echo "apiserver.main" ;;
        *) echo "unknown daemon $1" >&2; return 1 ;;
    esac
}

# our_pid NAME: prints the pid in run/NAME.pid when that process is alive (not a zombie),
# its command line carries the daemon's marker and its environment names this MINIK8S_HOME.
# Prints nothing otherwise: a pid file can never make us signal someone else's process.
our_pid() {
    local name=$1 pidfile=$RUN_DIR/$1.pid pid state marker
    [ -f "$pidfile" ] || return 0
    pid=$(tr -dc '0-9' < "$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 0
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 0
    [ "$state" != Z ] && [ "$state" != X ] || return 0
    marker=$(daemon_marker "$name")
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 0
    tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qxF "MINIK8S_HOME=$MINIK8S_HOME" || return 0
    echo "$pid"
}

alive() {  # alive PID: true while the process exists and is not a zombie
    local state
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

port_in_use() {  # port_in_use PORT: true when something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

http_ok() {  # http_ok URL: true on a 2xx answer within 2 s
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
}

etcd_healthy() {
    curl -fsS --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'
}

apiserver_ready() {
    http_ok "$API_URL/readyz"
}

# start_daemon NAME CMD...: runs CMD detached (own session, stdin from /dev/null, output to
# logs/NAME.log) with MINIK8S_HOME in its environment; the pid lands in run/NAME.pid.
start_daemon() {
    local name=$1 pidfile=$RUN_DIR/$1.pid log=$LOG_DIR/$1.log
    shift
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    rm -f "$pidfile"
    printf '\n=== %s: starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> "$log"
    # The inner shell writes its own pid and then becomes the daemon (exec), so the pid is right
    # whether or not setsid had to fork.
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
    env -u MINIK8S_ETCD_PORT -u MINIK8S_ETCD_PEER_PORT -u MINIK8S_API_PORT MINIK8S_HOME="$MINIK8S_HOME" \
        setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
    for _ in $(seq 1 100); do
        [ -s "$pidfile" ] && return 0
        sleep 0.05
    done
    echo "$name did not start; see $log" >&2
    return 1
}

# wait_for NAME SECONDS CHECK: polls CHECK until it succeeds; fails early when the daemon dies.
wait_for() {
    local name=$1 seconds=$2 check=$3 deadline pid
    deadline=$(( $(date +%s) + seconds ))
    while true; do
        if "$check"; then
            return 0
        fi
        pid=$(tr -dc '0-9' < "$RUN_DIR/$name.pid" 2>/dev/null || true)
        if [ -z "$pid" ] || ! alive "$pid"; then
            echo "$name exited during start-up; last lines of $LOG_DIR/$name.log:" >&2
            tail -n 30 "$LOG_DIR/$name.log" >&2 || true
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "$name not ready after ${seconds}s; last lines of $LOG_DIR/$name.log:" >&2
            tail -n 30 "$LOG_DIR/$name.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# stop_daemon NAME [GRACE]: SIGTERM, up to GRACE seconds (default 15), then SIGKILL.
stop_daemon() {
    local name=$1 grace=${2:-15} pid deadline
    pid=$(our_pid "$name")
    if [ -z "$pid" ]; then
        rm -f "$RUN_DIR/$name.pid"
        return 0
    fi
    echo "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + grace ))
    while alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 0.1
    done
    if alive "$pid"; then
        echo "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$RUN_DIR/$name.pid"
}
