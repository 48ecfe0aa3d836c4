-- 問い合わせ先: how citizens reach a department (telephone, hours, counter, address),
-- as the municipality writes it; shown with the department's forms, on the
-- completion and status pages, and in the citizens' guide.
ALTER TABLE departments ADD COLUMN contact text NOT NULL DEFAULT '' CHECK (length(contact) <= 500);
