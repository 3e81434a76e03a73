-- 2FA state per end user. Every table carries owner_id and references end_users by
-- (owner_id, id), so a factor can never belong to a user of another owner.

-- Bumped whenever 2FA is disabled: device tokens carry the generation they were issued under,
-- so every remembered device dies at once.
ALTER TABLE end_users ADD COLUMN device_generation integer NOT NULL DEFAULT 0;

CREATE TABLE totp_factors (
    owner_id          uuid NOT NULL,
    end_user_id       uuid NOT NULL,
    -- AES-GCM ciphertext of the base32 secret, bound to (owner_id, end_user_id)
    secret_ciphertext bytea NOT NULL,
    enabled_at        timestamptz,
    -- Highest time step accepted so far: a code of this step or an earlier one is refused
    -- (RFC 6238 section 5.2), which also makes concurrent identical requests succeed once.
    last_used_step    bigint,
    last_used_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, end_user_id),
    FOREIGN KEY (owner_id, end_user_id) REFERENCES end_users (owner_id, id) ON DELETE CASCADE
);

CREATE TABLE backup_codes (
    owner_id     uuid NOT NULL,
    end_user_id  uuid NOT NULL,
    code_hash    bytea NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, end_user_id, code_hash),
    FOREIGN KEY (owner_id, end_user_id) REFERENCES end_users (owner_id, id) ON DELETE CASCADE
);
