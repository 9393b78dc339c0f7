#!/usr/bin/env bash
# Install what the tests need, then run lint and the whole test suite.
#   bash scripts/test.sh            # everything (CI runs exactly this)
#   bash scripts/test.sh -m "not slow and not e2e" tests/unit   # any pytest arguments
# System packages (Debian): chromium for the browser tests, postgresql for the store
# tests. They are installed with apt-get when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
    if [[ "$(id -u)" == "0" ]]; then
        echo "test.sh: installing ${missing[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "${missing[@]}" >/dev/null
    else
        echo "test.sh: please install ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
bash scripts/check_local_model.sh  # rebuilds llama-cpp-python where its build crashes here
eval "$(bash scripts/start_test_postgres.sh)"

ruff check .
ruff format --check .
# Two workers (pytest-xdist), a test file each at a time, each with its own PostgreSQL
# database (tests/conftest.py); the slowest tests are listed at the end.
python -m pytest -n 2 --dist loadfile --durations=25 "$@"
