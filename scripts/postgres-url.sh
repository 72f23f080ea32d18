#!/usr/bin/env bash
# Prints a DATABASE_URL for a PostgreSQL that answers (POSTGRES_URL, else the local one);
# exits non-zero when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
.venv/bin/python - "$url" <<'PY'
import sys
import psycopg
with psycopg.connect(sys.argv[1], connect_timeout=3) as conn:
    conn.execute("SELECT 1")
PY
echo "$url"
