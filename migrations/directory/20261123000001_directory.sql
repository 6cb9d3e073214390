-- The email directory: email -> user id, in one database for the whole fleet, so that
-- emails are unique across shards and login finds a user's shard with one lookup.
-- See src/db/directory.rs for the reserve/confirm protocol that keeps it and the shards in
-- step without a distributed transaction.
CREATE TABLE directory_entries (
    -- Normalised (lower-case) address; the primary key is the cross-shard uniqueness.
    email text PRIMARY KEY,
    -- The user's id; its range names the shard, so the shard is not stored twice.
    user_id bigint NOT NULL,
    -- 'pending': reserved, the shard row may or may not exist yet (login ignores it).
    -- 'active': the shard row exists.
    state text NOT NULL CHECK (state IN ('pending', 'active')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Deleting a user removes their entries by id.
CREATE INDEX directory_entries_user_id_idx ON directory_entries (user_id);
-- The repair pass looks for stale reservations.
CREATE INDEX directory_entries_pending_idx ON directory_entries (updated_at) WHERE state = 'pending';
