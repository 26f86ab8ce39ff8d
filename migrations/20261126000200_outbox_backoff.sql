-- Outbox relay backoff: an event the broker did not confirm (down, unroutable) waits until
-- next_attempt_at before the relay tries it again; last_error says why it is still waiting.
ALTER TABLE outbox
    ADD COLUMN next_attempt_at DATETIME(6) NULL AFTER publish_attempts,
    ADD COLUMN last_error      TEXT        NULL AFTER next_attempt_at;
