#!/usr/bin/env bash
# Static checks, the same locally and in CI: ruff, mypy over every package that exists, and the
# import layering (scripts/layering.py → import-linter). Runs all three, fails if any failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
bash scripts/install-deps.sh || exit 1

failed=()

echo "== ruff check ."
.venv/bin/ruff check . || failed+=(ruff)

# Packages with only a README are not packages yet: ask layering.py which ones exist.
mapfile -t packages < <(.venv/bin/python scripts/layering.py --list-packages)
echo "== mypy ${packages[*]}"
.venv/bin/mypy "${packages[@]}" || failed+=(mypy)

echo "== import layering"
.venv/bin/python scripts/layering.py || failed+=(layering)

if [ ${#failed[@]} -gt 0 ]; then
    echo "check.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "check.sh: all checks passed"
