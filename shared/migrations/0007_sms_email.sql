-- SMS and email 2FA: a verified phone number or address per user and method, and the
-- notifier's record of every message it was asked to send.

CREATE TABLE contact_factors (
    owner_id      uuid NOT NULL,
    end_user_id   uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('sms', 'email')),
    -- AES-GCM ciphertext of the phone number or address, bound to (owner, user, kind)
    destination   bytea NOT NULL,
    -- what lists show: +1 *** *** 4567, j***@example.com
    masked        text NOT NULL,
    enabled_at    timestamptz,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, end_user_id, kind),
    FOREIGN KEY (owner_id, end_user_id) REFERENCES end_users (owner_id, id) ON DELETE CASCADE
);

-- One row per notification command (its id is the command's event id), written by the notifier.
CREATE TABLE notifications (
    id            uuid PRIMARY KEY,
    owner_id      uuid NOT NULL,
    channel       text NOT NULL CHECK (channel IN ('sms', 'email')),
    masked_to     text NOT NULL,
    status        text NOT NULL CHECK (status IN ('sent', 'retrying', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    provider_id   text,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_owner_idx ON notifications (owner_id, created_at DESC);
