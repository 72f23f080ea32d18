#!/usr/bin/env bash
# Runs the whole suite against real parts: a Redis of its own on a free port (unless
# REDIS_URL is set), SQLite files for the worker processes the tests start, PostgreSQL for
# the concurrency tests when one answers, headless Chromium for the admin; then ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
export SECRET_KEY=${SECRET_KEY:-test-only-secret-key}
export SECURE_COOKIES=0
export DEBUG=0
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlsite-test.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT INT TERM
if [ -z "${REDIS_URL:-}" ]; then
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  bash scripts/redis-server.sh "$port" "$run_dir/redis" --appendonly no --logfile "$run_dir/redis.log" &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 50); do .venv/bin/python -c "import redis,sys; redis.Redis(port=$port).ping()" 2>/dev/null && break; sleep 0.1; done
fi
export TEST_SQLITE_NAME="$run_dir/test.sqlite3"
export ARTIFACT_ROOT="$run_dir/models"
echo "test: Redis at $REDIS_URL, SQLite at $TEST_SQLITE_NAME"
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ $status -eq 5 ]; then echo "test: pytest collected no tests: failing"; exit 1; fi
if [ $status -ne 0 ]; then exit $status; fi
if [ $# -eq 0 ] && bash scripts/postgres-url.sh >/dev/null 2>&1; then
  # The concurrency tests again on PostgreSQL, where row locks and constraints are real.
  echo "test: the postgres-marked tests again on PostgreSQL"
  pg_status=0
  DATABASE_URL=$(bash scripts/postgres-url.sh) .venv/bin/python -m pytest -m "postgres or postgres_only" || pg_status=$?
  if [ $pg_status -eq 5 ]; then echo "test: no postgres-marked tests collected"; elif [ $pg_status -ne 0 ]; then exit $pg_status; fi
fi
DEBUG=1 .venv/bin/mypy mlsite predictions modelregistry
.venv/bin/ruff check .
.venv/bin/ruff format --check .
