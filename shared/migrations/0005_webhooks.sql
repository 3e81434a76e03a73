-- Webhooks: an owner's subscriptions, their signing secrets, and the delivery log.

CREATE TABLE webhooks (
    id                   uuid PRIMARY KEY,
    owner_id             uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url                  text NOT NULL CHECK (length(url) <= 2048),
    events               text[] NOT NULL CHECK (cardinality(events) > 0),
    description          text,
    active               boolean NOT NULL DEFAULT true,
    -- Events whose every attempt failed, in a row; reset by any success. At
    -- WEBHOOK_DISABLE_AFTER the dispatcher deactivates the webhook.
    consecutive_failures integer NOT NULL DEFAULT 0,
    disabled_at          timestamptz,
    disabled_reason      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, id)
);
CREATE INDEX webhooks_owner_idx ON webhooks (owner_id, created_at DESC);

-- Signing secrets, AES-GCM encrypted (HMAC needs the secret itself, so a hash will not do),
-- bound to their webhook by associated data. A rotation adds a secret and gives the previous
-- one an expiry: until then deliveries are signed with both.
CREATE TABLE webhook_secrets (
    id          uuid PRIMARY KEY,
    owner_id    uuid NOT NULL,
    webhook_id  uuid NOT NULL,
    ciphertext  bytea NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (owner_id, webhook_id) REFERENCES webhooks (owner_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_secrets_webhook_idx ON webhook_secrets (webhook_id, created_at DESC);

-- One row per (webhook, event): the exact body that is signed and sent on every attempt.
-- UNIQUE (webhook_id, event_id) makes the dispatcher idempotent under broker redelivery.
CREATE TABLE webhook_deliveries (
    id             uuid PRIMARY KEY,
    owner_id       uuid NOT NULL,
    webhook_id     uuid NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    body           bytea NOT NULL,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    -- attempts already made before the current run (a redelivery starts a new run with a
    -- fresh retry budget; attempt numbers keep counting)
    run_base       integer NOT NULL DEFAULT 0,
    next_retry_at  timestamptz,
    -- Set while a dispatcher works on the delivery, so a duplicate message (broker redelivery,
    -- a retry scheduled twice) waits instead of sending it twice; a crashed worker's lease ends.
    lease_until    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, event_id),
    UNIQUE (owner_id, id),
    FOREIGN KEY (owner_id, webhook_id) REFERENCES webhooks (owner_id, id) ON DELETE CASCADE
);

-- The delivery log: one row per HTTP attempt. status: succeeded (2xx), pending (failed, and
-- another attempt is scheduled at next_retry_at), failed (failed, and none follows).
CREATE TABLE webhook_attempts (
    id             uuid PRIMARY KEY,
    owner_id       uuid NOT NULL,
    webhook_id     uuid NOT NULL,
    delivery_id    uuid NOT NULL,
    attempt        integer NOT NULL,
    status         text NOT NULL CHECK (status IN ('succeeded', 'pending', 'failed')),
    status_code    integer,
    latency_ms     integer NOT NULL,
    error          text,
    next_retry_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, attempt),
    FOREIGN KEY (owner_id, delivery_id) REFERENCES webhook_deliveries (owner_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_log_idx ON webhook_attempts (webhook_id, created_at DESC, id DESC);
