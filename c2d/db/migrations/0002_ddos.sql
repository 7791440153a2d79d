-- DDOs indexed from MetadataCreated/MetadataUpdated events (our own metadata cache).

CREATE TABLE ddos (
    did             text PRIMARY KEY CHECK (did ~ '^did:op:[0-9a-f]{64}$'),
    chain_id        bigint NOT NULL,
    nft_address     text NOT NULL,
    ddo             jsonb NOT NULL,                   -- as served by the Aquarius-compatible API
    tx_hash         text NOT NULL,                    -- last MetadataCreated/Updated transaction
    block           bigint NOT NULL,
    log_index       integer NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ddos_nft_idx ON ddos (lower(nft_address));

-- How far the indexer has read each chain.
CREATE TABLE indexer_state (
    chain_id        bigint PRIMARY KEY,
    last_block      bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Events the indexer could not turn into a DDO, with the reason (for operators).
CREATE TABLE indexer_rejects (
    chain_id        bigint NOT NULL,
    tx_hash         text NOT NULL,
    log_index       integer NOT NULL,
    nft_address     text NOT NULL,
    reason          text NOT NULL,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (chain_id, tx_hash, log_index)
);
