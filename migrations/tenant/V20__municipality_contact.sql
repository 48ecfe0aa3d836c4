-- 代表の問い合わせ先: how citizens reach the municipality itself (its main number,
-- a help desk for online applications), as it writes it; shown on the home page and
-- in the citizens' guide, and in place of a department's own contact where the
-- department wrote none.
ALTER TABLE settings ADD COLUMN contact text NOT NULL DEFAULT '' CHECK (length(contact) <= 500);

-- The contact citizens see for a department's forms: its own, else the municipality's.
CREATE VIEW department_contacts AS
SELECT d.id AS department_id,
       CASE WHEN d.contact <> '' THEN d.name ELSE coalesce(s.name, '') END AS name,
       CASE WHEN d.contact <> '' THEN d.contact ELSE coalesce(s.contact, '') END AS contact
  FROM departments d LEFT JOIN settings s ON s.id;
