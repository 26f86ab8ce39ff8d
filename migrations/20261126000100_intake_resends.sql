-- Intake: how many times billing re-sent an order that already has a job. The batched intake
-- insert is `INSERT ... ON DUPLICATE KEY UPDATE resends = resends + 1`, so that a duplicate
-- touches its row (affected rows 2 instead of 1) and can be found, counted and compared in the
-- same transaction without a read before every insert.
ALTER TABLE jobs ADD COLUMN resends INT UNSIGNED NOT NULL DEFAULT 0;
