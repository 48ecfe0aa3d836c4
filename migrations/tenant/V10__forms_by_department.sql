-- A department's staff read their inbox form by form: each of the department's forms
-- (found here) gives its newest cases in the inbox's order from the index below, and
-- those few are merged. Walking every case of the tenant newest first, keeping the
-- department's, read most of a large tenant when its cases were few or old.
CREATE INDEX forms_department ON forms (department_id);

-- The inbox's order within a form, ties included (it replaces the index on
-- (form_id, submitted_at DESC), which served the same look-ups and needed a sort).
CREATE INDEX submissions_form_inbox ON submissions (form_id, submitted_at DESC, id DESC);
DROP INDEX submissions_form;
