-- Jobs, their audit trail, request nonces and used orders.

CREATE TABLE jobs (
    job_id          text PRIMARY KEY CHECK (job_id ~ '^[0-9a-f]{32}$'),
    owner           text NOT NULL,                    -- consumer address, checksummed
    did             text,                             -- main dataset DID
    input_dids      jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(input_dids) = 'array'),
    algo_did        text,                             -- algorithm DID, or 'raw'
    agreement_id    text,                             -- order transaction that paid for the job
    chain_id        bigint,
    environment     text NOT NULL,
    status          integer NOT NULL DEFAULT 1,       -- Ocean status code (1 ... 70)
    status_text     text NOT NULL DEFAULT 'Warming up',
    date_created    timestamptz NOT NULL DEFAULT clock_timestamp(),
    date_finished   timestamptz,
    results         jsonb CHECK (results IS NULL OR jsonb_typeof(results) = 'array'),
    stopreq         smallint NOT NULL DEFAULT 0 CHECK (stopreq IN (0, 1, 2)),  -- 1 by API, 2 deadline
    removed         smallint NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
    engine          text NOT NULL,                    -- 'local' or 'argo'
    workflow_name   text,                             -- name of the Workflow object in the engine
    workflow        jsonb,                            -- the rendered Workflow, for resume and audit
    expiry          timestamptz,                      -- results are removed after this instant
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- operator details (UI link, exit codes)
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX jobs_owner_idx ON jobs (lower(owner));
CREATE INDEX jobs_agreement_idx ON jobs (agreement_id);
CREATE INDEX jobs_unfinished_idx ON jobs (status) WHERE date_finished IS NULL;
CREATE UNIQUE INDEX jobs_workflow_name_idx ON jobs (workflow_name) WHERE workflow_name IS NOT NULL;

-- Every status transition, with the instant it happened and who reported it.
CREATE TABLE job_events (
    id              bigserial PRIMARY KEY,
    job_id          text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    old_status      integer,
    status          integer NOT NULL,
    status_text     text NOT NULL,
    source          text NOT NULL,                    -- 'provider', 'local-engine', 'argo-watcher', ...
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

-- Last nonce accepted per address (lower-case hex); a request must carry a strictly greater one.
CREATE TABLE nonces (
    address         text PRIMARY KEY CHECK (address = lower(address)),
    nonce           numeric NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- An order transaction starts at most one job.
CREATE TABLE used_orders (
    chain_id        bigint NOT NULL,
    tx_hash         text NOT NULL CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    job_id          text REFERENCES jobs (job_id) ON DELETE SET NULL,
    role            text NOT NULL DEFAULT 'dataset', -- 'dataset' or 'algorithm'
    used_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (chain_id, tx_hash)
);
