#!/usr/bin/env bash
# Runs the whole stack: Redis (unless REDIS_URL is set), web, worker and beat, with a demo
# model and an admin login. Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DEBUG=${DEBUG:-1}
export SECURE_COOKIES=${SECURE_COOKIES:-0}
export WEB_PORT=${WEB_PORT:-8000}
processes="web predict worker beat"
if [ -z "${REDIS_URL:-}" ]; then
  export EMBEDDED_REDIS_PORT=${EMBEDDED_REDIS_PORT:-6390}
  export REDIS_URL="redis://127.0.0.1:${EMBEDDED_REDIS_PORT}/0"
  processes="redis $processes"
fi
.venv/bin/python manage.py migrate --no-input -v 0
.venv/bin/python manage.py ensure_admin
.venv/bin/python manage.py seed_demo
echo "run: admin at http://127.0.0.1:${WEB_PORT}/admin/  health at http://127.0.0.1:${WEB_PORT}/healthz"
exec .venv/bin/honcho start -f Procfile $processes
