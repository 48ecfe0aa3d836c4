-- Deleting an application (申請の削除, 保存期間) deletes the drafts that point at it:
-- the one it was sent from and a correction under way. Found by index, not by a
-- scan of every draft per application.
CREATE INDEX citizen_drafts_submission ON citizen_drafts (submission_id) WHERE submission_id IS NOT NULL;
CREATE INDEX citizen_drafts_resubmit ON citizen_drafts (resubmit_of) WHERE resubmit_of IS NOT NULL;
