-- Each table's row count and checksum in the snapshot a tenant's backup was read
-- from ([[table, rows, md5], ...]): a restore drill compares the restored copy with
-- these rather than with the live database, which moves on after the backup.
-- NULL for the catalog's backups and for backups made before.
ALTER TABLE backups ADD COLUMN table_sums jsonb;
