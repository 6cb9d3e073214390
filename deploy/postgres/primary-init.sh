#!/usr/bin/env bash
# Runs once, when the official postgres image initialises an empty primary
# (mounted into /docker-entrypoint-initdb.d/): a role its streaming replica connects as, and the
# pg_hba.conf line that lets that role in. The image's own rules cover ordinary connections
# only; a replication connection needs a line of its own ("all" does not match it).
# Environment: REPLICATION_PASSWORD.
set -euo pipefail
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"

psql -v ON_ERROR_STOP=1 -v password="$REPLICATION_PASSWORD" --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
