-- A deleted application's idempotency key and who sent it (its history's first
-- actor), kept with its deletion note (as long as the operation log): the same
-- connected system's retry after the deletion is told so, not given a new
-- application. Null for deletions noted before this version.
ALTER TABLE submission_deletions ADD COLUMN idempotency_key uuid, ADD COLUMN made_by text;
CREATE INDEX submission_deletions_key ON submission_deletions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
