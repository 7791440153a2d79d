-- Every change to a job is announced on channel c2d_jobs after commit (payload: "<owner lower-case> <job id>"),
-- so readers that cache job statuses (the provider's status endpoint) refresh exactly what changed.
CREATE FUNCTION c2d_job_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('c2d_jobs', lower(NEW.owner) || ' ' || NEW.job_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION c2d_job_notify();
