-- The Escrow lock of each paid job (c2d/db/escrow_locks.py). The row is written BEFORE the node sends
-- createLock ('locking'), so a crash between the two is found again and resolved from the chain
-- (c2d/escrow_settlement.py): 'locking' -> 'locked' | 'failed'; 'locked' -> 'claimed' | 'released'.
-- No foreign key to jobs: the lock is made before the job row exists.
CREATE TABLE escrow_locks (
    job_id          text PRIMARY KEY,
    chain_id        bigint NOT NULL,
    escrow          text NOT NULL CHECK (escrow ~ '^0x[0-9a-fA-F]{40}$'),
    token           text NOT NULL CHECK (token ~ '^0x[0-9a-fA-F]{40}$'),
    payer           text NOT NULL CHECK (payer ~ '^0x[0-9a-fA-F]{40}$'),
    payee           text NOT NULL CHECK (payee ~ '^0x[0-9a-fA-F]{40}$'),  -- the node's wallet that locks
    lock_id         numeric(78, 0) NOT NULL CHECK (lock_id > 0),            -- uint256(sha256(job_id))
    amount_wei      numeric(78, 0) NOT NULL CHECK (amount_wei > 0),
    expiry_seconds  bigint NOT NULL CHECK (expiry_seconds > 0),             -- createLock's relative expiry
    from_block      bigint CHECK (from_block >= 0),                         -- no event of the lock before it
    state           text NOT NULL DEFAULT 'locking'
                    CHECK (state IN ('locking', 'locked', 'claimed', 'released', 'failed')),
    lock_tx         text CHECK (lock_tx ~ '^0x[0-9a-f]{64}$'),
    claim_tx        text CHECK (claim_tx ~ '^0x[0-9a-f]{64}$'),
    cost_wei        numeric(78, 0) CHECK (cost_wei >= 0),                   -- what the claim took
    release_tx      text CHECK (release_tx ~ '^0x[0-9a-f]{64}$'),
    reason          text,                                                   -- why 'failed' (or a note)
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (state <> 'claimed' OR (claim_tx IS NOT NULL AND cost_wei IS NOT NULL)),
    CHECK (state <> 'failed' OR reason IS NOT NULL)
);
-- settle() reads the open ones at every start and periodically
CREATE INDEX escrow_locks_unsettled_idx ON escrow_locks (created_at) WHERE state IN ('locking', 'locked');
