-- Who must sign in with a TOTP code besides the password: 'managers' (管理者 and
-- 所属管理者 only) or 'all' (every member of staff). Municipalities that exist keep
-- what they had ('managers'); a municipality created from now on starts with 'all'
-- (its settings row is inserted after the migrations, so it takes the new default).
ALTER TABLE settings ADD COLUMN staff_totp text NOT NULL DEFAULT 'managers'
    CHECK (staff_totp IN ('managers', 'all'));
ALTER TABLE settings ALTER COLUMN staff_totp SET DEFAULT 'all';
