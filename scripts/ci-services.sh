#!/usr/bin/env bash
# CI only: make sure a PostgreSQL answers for the concurrency tests (start or install one).
# Redis needs nothing here: the test command starts its own.
set -uo pipefail
cd "$(dirname "$0")/.."
command -v make >/dev/null || { apt-get update -qq && apt-get install -y -qq make; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! command -v pg_isready >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD NULL\"" || true
  su postgres -c "createdb test" 2>/dev/null || true
  sed -i 's/^\(host.*127.0.0.1\/32\s*\)\S*$/\1trust/' /etc/postgresql/*/main/pg_hba.conf || true
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main reload || true
fi
pg_up && echo "ci: PostgreSQL answers" || echo "ci: no PostgreSQL; its tests will not run"
