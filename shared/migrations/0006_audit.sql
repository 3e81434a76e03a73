-- The audit log: written only by the audit service, from the event stream; append-only.
--
-- Partitioned by day of recorded_at, so retention drops whole partitions instead of deleting
-- rows, and what it drops is always the oldest part of every owner's chain.
-- seq orders entries by when they were recorded (newest first = seq descending), which keeps
-- keyset pagination free of gaps and repeats while entries are being written.
-- Each entry carries a SHA-256 chained to the previous entry of the same owner (chain_seq), so
-- an edited, inserted or removed row breaks the chain from there on.
CREATE SEQUENCE audit_log_seq;

CREATE TABLE audit_log (
    seq          bigint NOT NULL DEFAULT nextval('audit_log_seq'),
    id           uuid NOT NULL,
    owner_id     uuid NOT NULL,
    chain_seq    bigint NOT NULL,
    event_id     uuid NOT NULL,
    type         text NOT NULL,
    user_id      text,
    actor_kind   text NOT NULL,
    actor_id     text NOT NULL,
    ip           text,
    user_agent   text,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    data         jsonb NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    PRIMARY KEY (id, recorded_at)
) PARTITION BY RANGE (recorded_at);

-- Rows outside every daily partition (an event far in the past or future) land here.
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;

CREATE INDEX audit_log_owner_seq_idx ON audit_log (owner_id, seq DESC);
CREATE INDEX audit_log_owner_user_idx ON audit_log (owner_id, user_id, seq DESC);
CREATE INDEX audit_log_owner_type_idx ON audit_log (owner_id, type, seq DESC);
CREATE INDEX audit_log_chain_idx ON audit_log (owner_id, chain_seq);

-- Every event id ever written: a redelivered event is recognised here (one unique index, not a
-- probe of every partition) and written once. Pruned with the partitions.
CREATE TABLE audit_event_ids (
    event_id     uuid PRIMARY KEY,
    recorded_at  timestamptz NOT NULL
);
CREATE INDEX audit_event_ids_recorded_idx ON audit_event_ids (recorded_at);

-- The newest link of each owner's chain; locked while a batch extends it.
CREATE TABLE audit_chain_heads (
    owner_id   uuid PRIMARY KEY,
    last_seq   bigint NOT NULL,
    last_hash  bytea NOT NULL
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_default_no_truncate BEFORE TRUNCATE ON audit_log_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
