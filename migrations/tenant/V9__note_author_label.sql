-- Who wrote a note when no staff member did (an integration through the API), as the
-- case history's actor_label: the case page showed such a 差戻し message as written
-- by the applicant.
ALTER TABLE submission_notes ADD COLUMN author_label text;
