-- 一時保存: a draft whose owner asked for a link to go on later (on any device)
-- keeps the hash of the link's key, and how many links it has sent (a few at most).
ALTER TABLE citizen_drafts
    ADD COLUMN resume_hash bytea UNIQUE,
    ADD COLUMN resume_mails integer NOT NULL DEFAULT 0;
