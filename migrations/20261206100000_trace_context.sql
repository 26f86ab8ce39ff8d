-- W3C trace context of each job (issue 16): the `traceparent` of the job's intake span (a child
-- of billing's), or billing's own when the worker exports no traces. Every drive of the job, on
-- any worker and after any crash or retry, starts its spans under it, and the completion event
-- carries the trace on. NULL for jobs taken in before this column existed.
ALTER TABLE jobs ADD COLUMN traceparent VARCHAR(55) CHARACTER SET ascii NULL;
