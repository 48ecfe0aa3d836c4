-- Case processing: status workflow with history, assignment, internal comments,
-- messages to the applicant with an outbox for their delivery, API tokens, and the
-- tamper-evident operation log (操作ログ).

ALTER TABLE submissions
    ADD COLUMN assignee_id bigint REFERENCES staff (id),
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN return_reason bytea,
    ADD COLUMN return_deadline date,
    ADD CONSTRAINT submissions_status CHECK (status IN ('received', 'reviewing', 'completed', 'rejected', 'returned', 'withdrawn'));
CREATE INDEX submissions_inbox ON submissions (submitted_at DESC, id DESC);
CREATE INDEX submissions_form_status ON submissions (form_id, status, submitted_at DESC, id DESC);
CREATE INDEX submissions_updated ON submissions (updated_at, id);
CREATE INDEX submissions_assignee ON submissions (assignee_id, submitted_at DESC) WHERE assignee_id IS NOT NULL;

-- Which answer the inbox shows beside each submission (a field id), per form.
ALTER TABLE forms ADD COLUMN summary_field text;

CREATE TABLE submission_events (
    id              bigint GENERATED ALWAYS AS IDENTITY (START WITH 3000) PRIMARY KEY,
    submission_id   uuid NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    -- NULL when the applicant acted (resubmitted, withdrew) or the API did without a person.
    actor_id        bigint REFERENCES staff (id),
    actor_label     text NOT NULL,
    from_status     text,
    to_status       text NOT NULL,
    -- Encrypted: a comment may name people.
    comment         bytea
);
CREATE INDEX submission_events_submission ON submission_events (submission_id, at);

CREATE TABLE submission_notes (
    id              bigint GENERATED ALWAYS AS IDENTITY (START WITH 4000) PRIMARY KEY,
    submission_id   uuid NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    author_id       bigint REFERENCES staff (id),
    -- 'comment' stays with staff; 'message' is shown to the applicant and mailed.
    kind            text NOT NULL CHECK (kind IN ('comment', 'message')),
    body            bytea NOT NULL
);
CREATE INDEX submission_notes_submission ON submission_notes (submission_id, at);

-- Mail and webhooks to deliver, written in the same transaction as what caused them.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY (START WITH 5000) PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL,
    submission_id   uuid REFERENCES submissions (id) ON DELETE CASCADE,
    -- Encrypted payload (recipient, subject, body).
    payload         bytea NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    sent_at         timestamptz
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE sent_at IS NULL;

CREATE TABLE api_tokens (
    id              bigint GENERATED ALWAYS AS IDENTITY (START WITH 6000) PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash      bytea NOT NULL UNIQUE,
    scopes          text[] NOT NULL,
    created_by      bigint REFERENCES staff (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    revoked_at      timestamptz
);

-- 操作ログ: append-only; each row carries the SHA-256 of the previous row's hash and
-- its own content, so an edited or deleted row breaks the chain.
CREATE TABLE audit_log (
    seq             bigint PRIMARY KEY,
    at              timestamptz NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL DEFAULT '',
    -- JSON text exactly as hashed (not jsonb, which would re-format it).
    detail          text NOT NULL DEFAULT '{}',
    prev_hash       bytea NOT NULL,
    hash            bytea NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_action ON audit_log (action, at);

-- How long the operation log is kept (days); default five years.
ALTER TABLE settings ADD COLUMN audit_retention_days integer NOT NULL DEFAULT 1827 CHECK (audit_retention_days >= 30);
-- The first kept row's predecessor hash after old rows are pruned, so the chain still verifies.
ALTER TABLE settings ADD COLUMN audit_anchor_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE settings ADD COLUMN audit_anchor_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000';

-- A draft that corrects a returned (差戻し) submission instead of making a new one.
ALTER TABLE citizen_drafts ADD COLUMN resubmit_of uuid REFERENCES submissions (id) ON DELETE CASCADE;
