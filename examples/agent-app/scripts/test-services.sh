#!/usr/bin/env bash
# Start throw-away PostgreSQL and Redis for the agent-app test suite (Debian, root, no systemd).
# Idempotent: installs packages only if missing, starts services only if down.
# Prints the export lines for AGENT_APP_TEST_DATABASE_URL / AGENT_APP_TEST_REDIS_URL on stdout.
set -euo pipefail

DB_NAME=agent
DB_USER=agent
DB_PASSWORD=agent
REDIS_PORT=6379

log() { echo "test-services: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root"; exit 1
fi

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# PostgreSQL: first cluster known to pg_lsclusters, created if none exists.
pg_version=$(pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1}')
if [[ -z "$pg_version" ]]; then
  pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  log "creating cluster $pg_version/main"
  pg_createcluster "$pg_version" main >&2
fi
pg_port=$(pg_lsclusters --no-header | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $3}')
if ! pg_isready -q -h 127.0.0.1 -p "$pg_port"; then
  log "starting PostgreSQL $pg_version/main on port $pg_port"
  pg_ctlcluster "$pg_version" main start >&2 || true
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$pg_port" >&2

psql_admin() { runuser -u postgres -- psql -p "$pg_port" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [[ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]]; then
  psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'" >&2
else
  psql_admin -c "ALTER ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'" >&2
fi
if [[ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]]; then
  psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2
fi

# Redis: daemonized, no persistence needed for tests.
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting redis-server on port $REDIS_PORT"
  redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >&2
fi
for _ in $(seq 1 60); do
  [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]] && break
  sleep 0.5
done
[[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping)" == "PONG" ]]

PGPASSWORD=$DB_PASSWORD psql -h 127.0.0.1 -p "$pg_port" -U "$DB_USER" -d "$DB_NAME" -qtAc 'SELECT 1' >/dev/null

echo "export AGENT_APP_TEST_DATABASE_URL=postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$pg_port/$DB_NAME"
echo "export AGENT_APP_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/15"
