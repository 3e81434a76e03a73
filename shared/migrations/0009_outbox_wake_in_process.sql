-- The relay is woken by the process that wrote the events, not by a NOTIFY from every commit:
-- an API request wakes its own replica's relay when it has finished (shared.outbox.Written), and
-- a writer outside a request notifies 'outbox' itself (shared.outbox.add without a Written).
-- The trigger cost PostgreSQL about 0.08 ms of CPU per event at 1,300 verifies/s (the queue
-- lock at every commit, and waking the listening backend), and the API the same notifications
-- to read back.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
