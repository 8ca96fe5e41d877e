-- Jobs, the queue with its leases. Times the API shows are RFC 3339 text (as in SQLite, so one
-- decoder reads both stores); lease expiry is a timestamptz compared with the database's clock
-- only, so daemons with skewed clocks still agree on who holds a job.
CREATE TABLE jobs (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    status           TEXT NOT NULL,
    phase            TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    package_json     TEXT NOT NULL,
    archive          TEXT NOT NULL,
    cache_key        TEXT,
    result_json      TEXT,
    error_json       TEXT,
    attestation      TEXT,
    logs             TEXT,
    facts            TEXT,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ
);
CREATE INDEX jobs_status ON jobs (status, seq);
CREATE INDEX jobs_cache ON jobs (cache_key, seq);

-- One row per signed attempt: the primary key makes a second result for an attempt impossible.
CREATE TABLE attestations (
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    envelope    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

-- Content-addressed blobs (package tars, facts, envelopes, logs) every daemon reads.
CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY,
    bytes       BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The key registry: every daemon's public key; a retired key stays published.
CREATE TABLE signing_keys (
    key_id          TEXT PRIMARY KEY,
    public_key_pem  TEXT NOT NULL,
    instance        TEXT NOT NULL,
    first_seen      TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at      TIMESTAMPTZ
);
