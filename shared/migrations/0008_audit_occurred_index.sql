-- GET /api/audit-logs with a `to` in the past: without this, the newest-first scan by seq walks
-- every entry recorded after `to` before it reaches the window. With it, the entries of the
-- window recorded late (after `to`, beyond api.domain.audit.LATE_AFTER) are found by occurred_at
-- in the partitions recorded after the window, with recorded_at checked in the index, not the
-- table; the partitions of the window itself are still read newest first by seq.
CREATE INDEX audit_log_owner_occurred_idx ON audit_log (owner_id, occurred_at, recorded_at);
