-- The audit chain the nodes share: one JSON line per row, each carrying the SHA-256 of the line
-- before it and an HMAC-SHA256 (hex) under a key derived from the nodes' service key, which the
-- database never holds. The one row of audit_head names the newest line; appends lock it, so
-- the lines of every node form one chain without gaps.
CREATE TABLE audit_line (
    seq  bigint PRIMARY KEY,
    line text NOT NULL,
    mac  text NOT NULL
);

CREATE TABLE audit_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (seq, hash)
    VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000');
