-- The GPUs the local engine has handed to running jobs (c2d/db/gpu_grants.py): one row per host device
-- /dev/nvidia<device>, held by one job at a time whatever environment declares it. Rows live from the job's
-- start to its end; an engine that starts drops those of jobs it does not resume.
-- No foreign key to jobs: a grant is dropped by the engine, never by the job's removal.
CREATE TABLE gpu_grants (
    device      integer PRIMARY KEY CHECK (device >= 0),
    job_id      text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX gpu_grants_job_idx ON gpu_grants (job_id);
