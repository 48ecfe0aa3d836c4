-- The contact citizens see with a form (department_contacts: the department's own,
-- else the municipality's), kept on the form's row: every page of a form reads that
-- row, and reading the contact through the view joined two more tables to it on
-- each page (more than a quarter of the database's work for a form page). Contacts change
-- rarely and only here, so the copies are kept by the database itself: a form
-- takes its department's contact when it is made or moved, and a department's or
-- the municipality's change is copied to the forms it concerns, in the same
-- transaction.
ALTER TABLE forms
    ADD COLUMN contact_name text NOT NULL DEFAULT '',
    ADD COLUMN contact text NOT NULL DEFAULT '';

UPDATE forms f SET contact_name = c.name, contact = c.contact
  FROM department_contacts c WHERE c.department_id = f.department_id;

CREATE FUNCTION form_contact_of_department() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT c.name, c.contact INTO NEW.contact_name, NEW.contact
      FROM department_contacts c WHERE c.department_id = NEW.department_id;
    RETURN NEW;
END
$$;

CREATE TRIGGER form_contact BEFORE INSERT OR UPDATE OF department_id ON forms
    FOR EACH ROW EXECUTE FUNCTION form_contact_of_department();

-- A department's or the municipality's change (the municipality's stands in for
-- every department that wrote none): the forms whose contact it changes.
CREATE FUNCTION form_contacts_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE forms f SET contact_name = c.name, contact = c.contact
      FROM department_contacts c
     WHERE c.department_id = f.department_id
       AND (f.contact_name, f.contact) IS DISTINCT FROM (c.name, c.contact);
    RETURN NULL;
END
$$;

CREATE TRIGGER form_contacts AFTER UPDATE OF name, contact ON departments
    FOR EACH ROW EXECUTE FUNCTION form_contacts_changed();

CREATE TRIGGER form_contacts AFTER INSERT OR UPDATE OF name, contact ON settings
    FOR EACH ROW EXECUTE FUNCTION form_contacts_changed();
