-- The results cleanup looks for finished jobs past their expiry whose results are still stored.
CREATE INDEX jobs_expiry_idx ON jobs (expiry) WHERE removed = 0 AND date_finished IS NOT NULL;
