-- 添付ファイル: files citizens attach to applications. The content is encrypted with
-- the municipality's key (table attachments, column content, the row's id bound in);
-- its name, kind, size and SHA-256 are kept with the answers, which are encrypted too.
-- A file belongs to the draft it was uploaded to until the application is sent, then
-- to the submission. Files no open draft or submission holds are deleted by the daily
-- purge of drafts.
CREATE TABLE attachments (
    id              uuid PRIMARY KEY,
    form_id         bigint NOT NULL REFERENCES forms (id) ON DELETE CASCADE,
    field_id        text NOT NULL,
    draft_id        uuid,
    submission_id   uuid REFERENCES submissions (id) ON DELETE CASCADE,
    content         bytea NOT NULL,
    size            bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_draft ON attachments (draft_id) WHERE draft_id IS NOT NULL;
CREATE INDEX attachments_submission ON attachments (submission_id) WHERE submission_id IS NOT NULL;
-- The purge looks for files without a submission.
CREATE INDEX attachments_unsent ON attachments (created_at) WHERE submission_id IS NULL;
-- Encrypted content does not compress: not tried.
ALTER TABLE attachments ALTER COLUMN content SET STORAGE EXTERNAL;
