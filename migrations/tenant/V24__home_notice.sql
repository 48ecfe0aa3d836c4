-- お知らせ: a short notice a 管理者 puts at the top of the municipality's home page
-- (a holiday when applications are not processed, a maintenance), shown until the
-- end of its last day (Japan time) when one is given.
ALTER TABLE settings
    ADD COLUMN notice text NOT NULL DEFAULT '' CHECK (length(notice) <= 500),
    ADD COLUMN notice_until date;
