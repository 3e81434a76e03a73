-- Tenancy: every end user belongs to exactly one owner (an account). The app's own id for the
-- user (external_id, the API's `userId`) is unique only within its owner, so two owners'
-- "user-123" are different rows. Tables below reference (owner_id, end_user_id) together, so a
-- row can never point at another owner's user.
CREATE TABLE end_users (
    id           uuid PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    external_id  text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, external_id),
    UNIQUE (owner_id, id)
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name         text NOT NULL,
    prefix       text NOT NULL,
    scopes       text[] NOT NULL,
    rate_limit   integer NOT NULL CHECK (rate_limit > 0),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at   timestamptz,
    UNIQUE (owner_id, id)
);
CREATE INDEX api_keys_owner_idx ON api_keys (owner_id, created_at DESC);

-- The secrets of a key, stored only as SHA-256 digests (keys are 256-bit random, so a fast hash
-- is safe). A rotation adds a secret and gives the old one an expiry: the grace period.
CREATE TABLE api_key_secrets (
    digest      bytea PRIMARY KEY,
    owner_id    uuid NOT NULL,
    api_key_id  uuid NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (owner_id, api_key_id) REFERENCES api_keys (owner_id, id) ON DELETE CASCADE
);
CREATE INDEX api_key_secrets_key_idx ON api_key_secrets (api_key_id);
