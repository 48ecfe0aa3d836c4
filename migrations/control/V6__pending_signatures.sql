-- Documents prepared by the control plane that wait for an operator's Ed25519
-- signature (made on the operator's own machine, e.g. in the console's browser):
-- a decommissioning request, or an erasure certificate after the erasure.
CREATE TABLE pending_signatures (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('decommission_request', 'erasure_certificate')),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    operator_id text NOT NULL REFERENCES operators (id),
    -- RFC 8785 canonical JSON of what is to be signed.
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
