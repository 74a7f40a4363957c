#!/usr/bin/env bash
# Installs everything minik8s needs on a Debian machine, then makes or refreshes the venv .venv.
#
#   system:  the Debian packages in APT_PACKAGES (apt-get, as root or through sudo); skipped
#            entirely when every one is already installed, so re-runs cost a few dpkg-queries.
#   python:  .venv made with python3 (3.11 or newer), `pip install -e '.[dev]'` run again only
#            when setup.cfg or pyproject.toml changed since the last install (a stamp in .venv).
#
# Idempotent; called by every make target that needs the tools (`make deps` runs it alone).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The one list of Debian packages (tests/unit/test_programs_installed.py checks that every program
# the scripts and the code call comes from one of them):
#   control plane  etcd-server etcd-client
#   node           containerd runc containernetworking-plugins (CNI) iptables iproute2 (ip, ss) kmod (modprobe)
#                  mount (umount)
#   images         docker-registry (the cluster registry) catatonit (pause) busybox-static debootstrap
#   tools          python3-venv curl procps
#   add-ons        nginx (the ingress controller's proxy; docs/ingress.md)
APT_PACKAGES="etcd-server etcd-client python3-venv curl procps iproute2 kmod mount \
containerd runc containernetworking-plugins iptables catatonit busybox-static debootstrap docker-registry wrk nginx"
# Packages whose Debian service would listen on a system default (etcd 2379, registry 5000, the system
# containerd socket, nginx 80): if installing them started one anyway, it is stopped again (see below).
SERVICE_BINARIES="etcd containerd docker-registry nginx"

# kubectl is already on the project's machines (package `kubectl`, a dispatcher over 1.27–1.33).
# Elsewhere, Debian's own `kubernetes-client` (kubectl 1.20) is enough for what minik8s serves.
if ! command -v kubectl >/dev/null 2>&1; then
    APT_PACKAGES="$APT_PACKAGES kubernetes-client"
fi

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.minik8s-deps-stamp

log() { printf 'install-deps: %s\n' "$*"; }

missing_packages() {
    local pkg
    for pkg in $APT_PACKAGES; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s ' "$pkg"
        fi
    done
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "install-deps: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

service_pids() {  # pids of the daemons in SERVICE_BINARIES that run now, one a line
    local name
    for name in $SERVICE_BINARIES; do
        pgrep -x "$name" 2>/dev/null || true
    done | sort -n
}

# stop_new_services BEFORE: a service daemon that apt-get started despite policy-rc.d (a pid not in
# BEFORE, not run by a minik8s supervisord) would sit on a system default port or socket: stop it.
stop_new_services() {
    local pid
    for pid in $(comm -13 <(printf '%s\n' "$1") <(service_pids)); do
        if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -q '^MINIK8S_SUPERVISED='; then
            continue
        fi
        # A cluster's nginx hides its environment under its process title; it runs in HOME/ingress,
        # while a service that apt-get started runs in /.
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" != / ]; then
            continue
        fi
        log "stopping $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) (pid $pid), started by apt-get"
        as_root kill -TERM "$pid" 2>/dev/null || true
    done
}

install_system_packages() {
    local missing
    missing=$(missing_packages)
    if [ -z "$missing" ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: missing packages ($missing) and no apt-get: install them by hand" >&2
        exit 1
    fi
    log "installing Debian packages: $missing"
    # Debian starts a package's service on install (etcd on 2379, later docker-registry on 5000).
    # minik8s runs its own daemons on its own ports, so keep those from starting: a policy-rc.d
    # that says "no" for the duration of this install, unless the machine already has one.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=1
    fi
    local rc=0 before
    before=$(service_pids)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
    if [ "$rc" -eq 0 ]; then
        # shellcheck disable=SC2086  # word splitting of the package list is intended
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $missing </dev/null || rc=$?
    fi
    if [ "$made_policy" -eq 1 ]; then
        as_root rm -f "$policy"
    fi
    stop_new_services "$before"
    if [ "$rc" -ne 0 ]; then
        echo "install-deps: apt-get failed (exit $rc)" >&2
        exit "$rc"
    fi
    missing=$(missing_packages)
    if [ -n "$missing" ]; then
        echo "install-deps: still missing after apt-get: $missing" >&2
        exit 1
    fi
}

python_ok() {  # $1: interpreter; true when it runs and is 3.11 or newer
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

make_venv() {
    if ! python_ok "$PYTHON"; then
        echo "install-deps: $PYTHON is missing or older than 3.11 (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python"; then
        return 0
    fi
    log "creating $VENV with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
}

install_python_packages() {
    local want
    want=$(cat setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        return 0
    fi
    log "pip install -e '.[dev]' into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip </dev/null
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]' </dev/null
    printf '%s\n' "$want" > "$STAMP"
}

install_system_packages
make_venv
install_python_packages
