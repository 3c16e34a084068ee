#!/usr/bin/env bash
# The whole test suite: set-up (.venv, Mosquitto, Chromium, PostgreSQL), then ruff, mypy, pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/hwprobe -x`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

EDGEFLEET_SETUP_BROWSER=1 bash scripts/setup.sh

# PostgreSQL: the control plane's tests run on it too; start the local cluster if it is down.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "test: starting PostgreSQL"
  for v in /etc/postgresql/*; do
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
  done
fi
if ! command -v pg_isready >/dev/null 2>&1 || ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "test: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will be skipped"
  export EDGEFLEET_TEST_POSTGRES=0
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict on the packages)"
.venv/bin/mypy
echo "== pytest"
set +e
# Coverage of the four packages (line coverage only: the C tracer costs little more than that);
# the per-file table is in .coverage (`.venv/bin/coverage report`), the total is printed here.
.venv/bin/python -m pytest -q -p no:cacheprovider --cov --cov-report= "$@"
rc=$?
if [ -f .coverage ]; then
  echo "coverage: $(.venv/bin/coverage report --format=total 2>/dev/null || echo '?')% of agent, controlplane, hwprobe, models"
fi
set -e
# Exit 5 means "no tests collected": with a filter given by the caller that is not a failure.
if [ "$rc" = 5 ]; then
  echo "test: pytest collected no tests"
  rc=0
fi
exit "$rc"
