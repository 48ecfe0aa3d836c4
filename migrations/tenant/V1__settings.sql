-- A municipality's own database. This first version holds its settings, read on
-- every page so the front tier's routing, pools and budget are exercised end to end.

CREATE TABLE settings (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    tenant_id       uuid NOT NULL,
    name            text NOT NULL,
    local_gov_code  char(6) NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
