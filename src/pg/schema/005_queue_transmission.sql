-- Fingerprints of accepted transmissions (src/queue/retransmit.rs), shared by the nodes: a client
-- that missed our 250 and sends the same message again, to any node, is answered with the first
-- copy's queue ids. A row is written by the statement that queues its message, so it commits with
-- the message; rows older than the window (24 hours) are deleted by the nodes.
-- `fingerprint` is an HMAC-SHA256 under the service key: without the key it says nothing of the
-- sender, the recipients or the message, only that two transmissions were the same.
CREATE TABLE queue_transmission (
    fingerprint bytea NOT NULL,
    id          text NOT NULL,
    accepted_at bigint NOT NULL,
    PRIMARY KEY (fingerprint, id)
);
CREATE INDEX queue_transmission_accepted_at ON queue_transmission (accepted_at);
