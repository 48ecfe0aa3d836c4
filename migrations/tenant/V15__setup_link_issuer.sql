-- Who was shown each account setup link (NULL: an operator from the command line), so
-- that the links a 所属管理者 or 管理者 was shown stop working when they lose that role,
-- move department or are disabled.
ALTER TABLE staff_setup_tokens ADD COLUMN issued_by bigint REFERENCES staff (id) ON DELETE SET NULL;
