-- A training site (研修用): a municipality's copy where staff practise, whose
-- applications, drafts and forms `madoguchi tenant training-reset` deletes between
-- sessions. Set only when the tenant is created: a municipality's real site can
-- never become one.
ALTER TABLE tenants ADD COLUMN training boolean NOT NULL DEFAULT false;
