#!/usr/bin/env bash
# Runs every test tier with the venv's pytest: tests/unit (fakes), tests/integration (real etcd,
# real apiserver), tests/e2e (the whole cluster, `make up` included).
#
#   scripts/test.sh [PYTEST ARGS...]   e.g. scripts/test.sh tests/unit -k watch
#   MINIK8S_TEST_TIMEOUT   per-test limit in seconds (default 300)
#   MINIK8S_SUITE_BUDGET   limit for the whole run in seconds (default 2400, CI allows 5400 in all)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh

TEST_TIMEOUT=${MINIK8S_TEST_TIMEOUT:-300}
SUITE_BUDGET=${MINIK8S_SUITE_BUDGET:-2400}

args=("$@")
if [ ${#args[@]} -eq 0 ]; then
    # End-to-end last: their whole cluster (a session fixture) lives until the session ends, and its
    # daemons would otherwise run beside the integration tests' timing-sensitive convergence checks.
    args=(tests/unit tests/integration tests/e2e)
fi

# On the budget, SIGINT first so pytest unwinds its fixtures (stopping the etcds it started),
# SIGKILL 60 s later if that hangs.
rc=0
timeout --signal=INT --kill-after=60 "$SUITE_BUDGET" \
    .venv/bin/python -m pytest --durations=25 --timeout="$TEST_TIMEOUT" "${args[@]}" </dev/null || rc=$?

case $rc in
    0) ;;
    5) echo "test.sh: pytest collected no tests (exit 5): that is a failure here" >&2; rc=1 ;;
    124|137) echo "test.sh: the suite ran past its budget of ${SUITE_BUDGET}s" >&2 ;;
    *) echo "test.sh: pytest exited with $rc" >&2 ;;
esac
exit "$rc"
