-- Users and posts of one shard. The same migration runs on every shard; what differs per
-- shard is its id range, which `scalable-api migrate` binds afterwards (src/db/migrate.rs):
-- it records the range in shard_identity, bounds both id sequences to it (NO CYCLE, so an
-- exhausted range fails loudly instead of wrapping into another shard's ids) and adds CHECK
-- constraints so not even a hand-written INSERT can put a foreign id here.

-- Which shard this database is. Written once by `migrate`; a config that points shard 1 at
-- shard 0's database is refused instead of silently mixing ranges.
CREATE TABLE shard_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_id integer NOT NULL,
    first_id bigint NOT NULL,
    last_id bigint NOT NULL,
    CHECK (first_id <= last_id)
);

CREATE SEQUENCE users_id_seq AS bigint NO CYCLE;
CREATE TABLE users (
    id bigint PRIMARY KEY DEFAULT nextval('users_id_seq'),
    -- Normalised (lower-case) by the API. Unique here as a shard-local safety net; global
    -- uniqueness is the directory's job.
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    -- argon2id PHC string: algorithm, parameters, salt and hash in one field.
    password_hash text NOT NULL,
    tier text NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'pro')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE users_id_seq OWNED BY users.id;

CREATE SEQUENCE posts_id_seq AS bigint NO CYCLE;
CREATE TABLE posts (
    id bigint PRIMARY KEY DEFAULT nextval('posts_id_seq'),
    -- A post lives on its author's shard, so this foreign key is local and enforceable, and
    -- deleting a user deletes their posts in the same transaction.
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE posts_id_seq OWNED BY posts.id;

-- A user's posts, newest first: `WHERE user_id = $1 ORDER BY id DESC LIMIT n` is one index
-- range scan, no sort (ids grow with time within a shard). It also serves the foreign key's
-- ON DELETE CASCADE lookup.
CREATE INDEX posts_user_id_id_idx ON posts (user_id, id DESC);

-- The newest-first feed: each shard's top `offset + limit` keys come from this index alone
-- (index-only scan on (created_at, id)), before the k-way merge.
CREATE INDEX posts_created_at_id_idx ON posts (created_at DESC, id DESC);
