-- API keys of service clients, in the directory database: global like the email directory,
-- so a key's id finds its row with one lookup whichever shard its owner lives on.
-- See src/auth/api_key.rs for the key format and why only a fast hash of the secret is kept.
CREATE TABLE api_keys (
    -- The key's public lookup part: a key reads `sk_<id>_<secret>`.
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The user the key acts for. Not a foreign key: users live on the shards.
    user_id bigint NOT NULL,
    -- The owner's label for it ("billing export"), shown in their list.
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- 'read': reads only. 'write': everything its owner may do, but managing keys.
    scope text NOT NULL CHECK (scope IN ('read', 'write')),
    -- The rate-limit tier requests with this key are sized by. Every key starts as 'service';
    -- an operator may move one (UPDATE api_keys SET tier = 'pro' WHERE id = ...): instances
    -- see the change within auth.api_keys.cache_ttl.
    tier text NOT NULL DEFAULT 'service' CHECK (tier IN ('anonymous', 'free', 'pro', 'service')),
    -- BLAKE2b-256 of the secret part. Never the secret itself: it is shown once, at creation.
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set when revoked. The row stays, so the audit log's key ids keep meaning something.
    revoked_at timestamptz
);

-- An owner's live keys: listing them, counting them against auth.api_keys.max_per_user.
CREATE INDEX api_keys_live_by_user_idx ON api_keys (user_id, id) WHERE revoked_at IS NULL;
