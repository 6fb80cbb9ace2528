#!/usr/bin/env bash
# Starts a local PostgreSQL for the test suite (installed from Debian's packages when missing)
# and prints the URL the tests read from REFSYNC_TEST_POSTGRES_URL. Listens on localhost only.
# Usage: export REFSYNC_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
set -euo pipefail
log() { printf 'postgres: %s\n' "$*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing postgresql from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
  log "creating cluster $version/main"
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -qx online; then
  log "starting cluster $version/main"
  pg_ctlcluster "$version" main start >&2
fi

port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$port" || { log "not ready after 30 s"; exit 1; }

su postgres -c "psql -q -p $port -c \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
log "ready: PostgreSQL $version on 127.0.0.1:$port"
echo "postgres://postgres:postgres@127.0.0.1:$port/postgres"
