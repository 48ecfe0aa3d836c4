-- 一時保存: a draft whose owner asked for a link to go on later, on any device.
ALTER TABLE citizen_drafts
    -- SHA-256 of the mailed link's key (replaced by the next link; after the link
    -- is opened it works two minutes more, then no longer).
    ADD COLUMN resume_hash bytea UNIQUE,
    -- Links this draft has sent (a few at most).
    ADD COLUMN resume_mails integer NOT NULL DEFAULT 0,
    -- The page it was saved from (NULL: the confirmation step), where the link leads.
    ADD COLUMN resume_page integer,
    -- When its link was first opened, moving it into another browser.
    ADD COLUMN resumed_at timestamptz,
    -- The hash of the claim cookie of the browser that first opened it (set by the
    -- link's page): only that browser may open the link again, for two minutes.
    ADD COLUMN resume_claim bytea,
    -- The hash of the token it was under before a link moved it, so the browser
    -- that saved it is told where its draft went.
    ADD COLUMN moved_from bytea;
CREATE INDEX citizen_drafts_moved_from ON citizen_drafts (moved_from) WHERE moved_from IS NOT NULL;
-- A link mail's recipient mailbox as a blind index (HMAC under the municipality's
-- key), so one address is sent a few links a day at most; such rows are deleted a
-- day after they are sent or given up.
ALTER TABLE outbox ADD COLUMN recipient_index bytea;
CREATE INDEX outbox_recipient ON outbox (recipient_index, created_at) WHERE recipient_index IS NOT NULL;
