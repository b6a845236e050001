-- edge-agent hub schema, version 2: when the agent answered a gap's latest `resend` (ok, or
-- refused). The hub sends an agent one `resend` at a time: the next one once the last was
-- answered, or `resend_retry_s` after it was sent.
ALTER TABLE gaps ADD COLUMN resend_answered_at timestamptz;
