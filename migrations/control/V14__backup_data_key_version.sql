-- The data-key version a tenant backup's values are sealed with (the database's
-- settings.data_key_version in the dump's snapshot); key_version is the one its backup
-- key is wrapped with. A data-key version no backup names either way, older than the
-- newest, is deleted after retention (`data_key::retire_unused`). NULL: a backup made
-- before this was recorded, which keeps every version up to its key_version.
ALTER TABLE backups ADD COLUMN data_key_version integer;
