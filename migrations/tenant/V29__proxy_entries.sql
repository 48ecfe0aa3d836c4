-- 代理入力: applications a member of staff entered for a citizen who applied at the
-- counter, by telephone or by post; how each came, who entered it, the identity
-- document seen (its kind only, never its number) and whether it was entered
-- outside the 受付期間 (a letter posted in time, say). Online applications have no row.
CREATE TABLE proxy_entries (
    submission_id     uuid        PRIMARY KEY REFERENCES submissions (id) ON DELETE CASCADE,
    channel           text        NOT NULL CHECK (channel IN ('counter', 'phone', 'post', 'fax', 'other')),
    staff_id          bigint      NOT NULL REFERENCES staff (id),
    identity_document text        CHECK (identity_document IN
                                   ('my_number_card', 'drivers_license', 'passport', 'residence_card',
                                    'two_documents', 'copy_by_post', 'other')),
    outside_period    boolean     NOT NULL DEFAULT false,
    entered_at        timestamptz NOT NULL DEFAULT now()
);
