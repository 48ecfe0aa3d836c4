-- 鍵の更新: the data-key version this database's blind indexes are keyed by. Every
-- sealed value is under it or an older version; a rotation seals them all again and
-- sets it in the same transaction (`madoguchi tenant rotate-data-key`).
ALTER TABLE settings
    ADD COLUMN data_key_version integer NOT NULL DEFAULT 1 CHECK (data_key_version > 0);
