-- Delivery of the outbox by mail: when a row is tried next, and why the last try
-- failed (an SMTP reply code or a class of error such as "timeout", never the
-- server's text, which may name the recipient). A row given up waits until
-- 'infinity'; a sent one keeps sent_at and loses its payload.
ALTER TABLE outbox
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error text;
DROP INDEX outbox_pending;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;
-- A case's mail (the staff page) and the cascade when a submission is deleted.
CREATE INDEX outbox_submission ON outbox (submission_id);
