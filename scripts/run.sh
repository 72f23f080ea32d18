#!/usr/bin/env bash
# Runs the whole stack: Redis (unless REDIS_URL is set), web, worker and beat, with a demo
# model and an admin login. Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DEBUG=${DEBUG:-1}
export SECURE_COOKIES=${SECURE_COOKIES:-0}
export WEB_PORT=${WEB_PORT:-8000}

# Redis comes up before migrate and seed_demo: the rows they change are announced through it
# to the caches of every process (mlsite/freshcache.py), which warns on each one it cannot.
start_redis() {
  bash scripts/redis-server.sh "$EMBEDDED_REDIS_PORT" var/redis --logfile "$PWD/var/redis/redis.log" &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    sleep 0.1
    kill -0 "$redis_pid" 2>/dev/null || break  # e.g. the port is taken
    if .venv/bin/python -c "import redis; redis.Redis(port=$EMBEDDED_REDIS_PORT).ping()" 2>/dev/null; then
      return
    fi
  done
  echo "run: Redis did not start on port $EMBEDDED_REDIS_PORT: see var/redis/redis.log" >&2
  exit 1
}

if [ -z "${REDIS_URL:-}" ]; then
  export EMBEDDED_REDIS_PORT=${EMBEDDED_REDIS_PORT:-6390}
  export REDIS_URL="redis://127.0.0.1:${EMBEDDED_REDIS_PORT}/0"
  start_redis
fi
.venv/bin/python manage.py migrate --no-input -v 0
.venv/bin/python manage.py ensure_admin
.venv/bin/python manage.py seed_demo
echo "run: admin at http://127.0.0.1:${WEB_PORT}/admin/  health at http://127.0.0.1:${WEB_PORT}/healthz"
.venv/bin/honcho start -f Procfile web predict worker beat
