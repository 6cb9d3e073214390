#!/usr/bin/env bash
# Entrypoint of a streaming replica on the official postgres image (docker-compose's
# shardN-replica). On first start, with an empty data directory, it clones the primary with
# `pg_basebackup -R` through a physical replication slot of its own; then it hands over to
# the image's entrypoint, which starts Postgres as a hot standby. The same steps as
# scripts/stack's local replicas:
#   -R          writes primary_conninfo and standby.signal: the copy starts as a standby and
#               streams from the primary
#   -X stream   the WAL written during the copy streams along, so the copy is consistent
#   -C -S slot  the primary keeps WAL until this replica has it, so a replica that was down
#               a while catches up instead of needing a new clone (the cost: a replica gone
#               for good holds WAL on the primary until its slot is dropped)
# Environment: PRIMARY_HOST, PRIMARY_PORT (5432), REPLICATION_SLOT, REPLICATION_PASSWORD.
# scripts/check-deploy runs this very file against a throwaway local primary.
set -euo pipefail
: "${PRIMARY_HOST:?set PRIMARY_HOST}" "${REPLICATION_SLOT:?set REPLICATION_SLOT}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
PRIMARY_PORT=${PRIMARY_PORT:-5432}
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGPASSWORD=$REPLICATION_PASSWORD

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    until pg_isready --quiet -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -d postgres; do
        echo "replica: waiting for $PRIMARY_HOST" >&2
        sleep 1
    done
    # A slot left by an earlier clone of this replica (its volume was deleted, the primary's
    # was not) points at WAL this new copy does not need: drop it, then create it afresh.
    psql "host=$PRIMARY_HOST port=$PRIMARY_PORT user=replicator dbname=postgres replication=database" \
        -c "DROP_REPLICATION_SLOT $REPLICATION_SLOT" >/dev/null 2>&1 || true
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    echo "replica: cloning $PRIMARY_HOST (slot $REPLICATION_SLOT)" >&2
    gosu postgres pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -D "$PGDATA" \
        -R -X stream -C -S "$REPLICATION_SLOT" --checkpoint=fast
fi

exec docker-entrypoint.sh "$@"
