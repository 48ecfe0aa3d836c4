-- ウイルスチェック of stored files: when a file was last found clean by ClamAV (at
-- upload, or by `madoguchi tenant scan-files` later, with newer signatures), and the
-- signature found in it if one was. A file found infected after it was stored is kept
-- (it is the application's) but never handed out again: not to staff, an
-- integration, an export, nor the citizen.
ALTER TABLE attachments
    ADD COLUMN scanned_at timestamptz,
    ADD COLUMN infected   text;
