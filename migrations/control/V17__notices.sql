-- Notices operators post to every municipality's pages (a planned stop for
-- maintenance, an outage under way), shown on citizens' and staff pages from
-- shown_from until shown_until. The front tier keeps a copy and reloads it when told.
CREATE TABLE notices (
    id           bigserial PRIMARY KEY,
    shown_from   timestamptz NOT NULL,
    shown_until  timestamptz NOT NULL CHECK (shown_until > shown_from),
    body         text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 500),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER notices_changed AFTER INSERT OR UPDATE OR DELETE ON notices
    FOR EACH STATEMENT EXECUTE FUNCTION notify_catalog_changed();
