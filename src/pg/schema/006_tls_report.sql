-- TLS-RPT (RFC 8460), shared by the nodes: every outbound SMTP session a node counts, and how
-- far each recipient domain has been reported, so that one node sends each domain's report for
-- a period, counting the sessions of all the nodes.

-- One row per session: when it ended (seconds since the epoch), the recipient domain (the
-- policy domain), the node that counted it, the policy it was held under and, when it did not
-- meet it, why (JSON as the file journal keeps them). No message content, no addresses.
CREATE TABLE tls_report_session (
    seq     bigserial PRIMARY KEY,
    t       bigint NOT NULL,
    domain  text NOT NULL,
    node    text NOT NULL,
    policy  jsonb NOT NULL,
    failure jsonb
);
-- The sessions of a period (reports), and a domain's old ones (pruning).
CREATE INDEX tls_report_session_t ON tls_report_session (t);
CREATE INDEX tls_report_session_domain_t ON tls_report_session (domain, t);

-- Per domain: its sessions before reported_until are reported (or were not wanted).
CREATE TABLE tls_report_state (
    domain         text PRIMARY KEY,
    reported_until bigint NOT NULL,
    reported_at    timestamptz NOT NULL DEFAULT now(),
    node           text NOT NULL
);

-- The end of the range of the last daily run, by any node (one row).
CREATE TABLE tls_report_daily (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    daily_until bigint NOT NULL,
    node        text NOT NULL
);
