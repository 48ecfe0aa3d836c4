-- The inbox filtered by status alone (across forms) reads its first page from here,
-- newest first, instead of walking every submission and discarding other statuses.
CREATE INDEX submissions_status ON submissions (status, submitted_at DESC, id DESC);
