-- When this draft itself sent its application (or its correction): the completion
-- page shows what was sent (申請内容の控え) for a while after, in that browser only,
-- not in another whose draft was merely closed by the same send.
ALTER TABLE citizen_drafts ADD COLUMN sent_at timestamptz;
