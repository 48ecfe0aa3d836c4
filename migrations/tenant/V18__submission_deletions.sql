-- What was deleted (申請の削除, 保存期間), without anything of its content: the
-- application's id and receipt number, its form, when and why. The integration API
-- lists these (GET /api/v1/deletions) so connected systems delete their copies too;
-- kept as long as the operation log.
CREATE TABLE submission_deletions (
    submission_id   uuid PRIMARY KEY,
    receipt_number  text NOT NULL,
    form_id         bigint NOT NULL,
    deleted_at      timestamptz NOT NULL DEFAULT now(),
    cause           text NOT NULL CHECK (cause IN ('staff', 'retention'))
);
CREATE INDEX submission_deletions_at ON submission_deletions (deleted_at, submission_id);
