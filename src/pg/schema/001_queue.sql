-- The durable queue (src/queue/backend/postgres.rs). `body` is the whole queue file as the spool
-- writes it (format version 2: the message sealed under a fresh content key wrapped by the
-- service key); `envelope` is the envelope JSON, in clear as in the spool, for listings.
CREATE TABLE queue_message (
    id           text PRIMARY KEY,
    state        text NOT NULL CHECK (state IN ('incoming', 'active', 'deferred')),
    envelope     bytea NOT NULL,
    next_attempt bigint NOT NULL,
    size         bigint NOT NULL,
    body         bytea NOT NULL,
    lease_node   text,
    lease_until  timestamptz,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'active') = (lease_node IS NOT NULL AND lease_until IS NOT NULL))
);
-- Ciphertext does not compress: store it out of line without trying.
ALTER TABLE queue_message ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE INDEX queue_message_state ON queue_message (state, id);

-- Messages that failed verification when claimed: kept for inspection, never delivered.
CREATE TABLE queue_quarantine (
    seq            bigserial PRIMARY KEY,
    id             text NOT NULL,
    reason         text NOT NULL,
    body           bytea NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE queue_quarantine ALTER COLUMN body SET STORAGE EXTERNAL;

-- Written and removed by health probes; always empty between them.
CREATE TABLE queue_probe (
    node text PRIMARY KEY,
    at   timestamptz NOT NULL
);
