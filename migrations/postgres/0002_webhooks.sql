-- Webhook callbacks registered per job, and the outbox of deliveries. An outbox row is written
-- in the transaction that ends the job (or, for a callback registered after that, in the
-- registering transaction), so a finished job's webhook is never lost; any daemon delivers it.
CREATE TABLE webhook_targets (
    job_id  TEXT NOT NULL,
    url     TEXT NOT NULL,
    PRIMARY KEY (job_id, url)
);

CREATE TABLE webhook_outbox (
    -- The `webhook-id` header: the same on every retry, the receiver's idempotency key.
    id            TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL,
    url           TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    delivered_at  TIMESTAMPTZ,
    failed_at     TIMESTAMPTZ,
    lease_owner   TEXT,
    lease_until   TIMESTAMPTZ
);
CREATE INDEX webhook_outbox_job ON webhook_outbox (job_id);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
