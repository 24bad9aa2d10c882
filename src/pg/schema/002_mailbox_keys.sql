-- The mailbox store's key hierarchy (src/store/backend/postgres.rs), as the SQLite index keeps it
-- (src/store/index.rs): policy key generations with their wraps under root and availability keys,
-- mailbox keys wrapped under policy keys, and the audit log's anchor. Every wrap is ciphertext
-- under a key that never enters the database; retiring or revoking deletes wraps. `store_message`
-- holds the message rows the key hierarchy answers for (a revocation counts them).
CREATE TABLE policy_key (
    id         bigserial PRIMARY KEY,
    policy     text NOT NULL,
    generation bigint NOT NULL,
    state      text NOT NULL CHECK (state IN ('active', 'retired', 'revoked')),
    created    bigint NOT NULL,
    UNIQUE (policy, generation)
);

CREATE TABLE policy_key_wrap (
    policy_key_id bigint NOT NULL REFERENCES policy_key (id),
    kind          text NOT NULL CHECK (kind IN ('root', 'availability')),
    key_id        text NOT NULL,
    wrapped       bytea NOT NULL,
    PRIMARY KEY (policy_key_id, key_id)
);

CREATE TABLE mailbox_key (
    id            bigserial PRIMARY KEY,
    mailbox       text NOT NULL,
    policy_key_id bigint REFERENCES policy_key (id),
    wrapped       bytea,
    state         text NOT NULL CHECK (state IN ('active', 'revoked')),
    created       bigint NOT NULL
);
CREATE INDEX mailbox_key_by_mailbox ON mailbox_key (mailbox, id);
CREATE INDEX mailbox_key_by_policy_key ON mailbox_key (policy_key_id);

CREATE TABLE store_message (
    seq            bigserial PRIMARY KEY,
    id             text NOT NULL UNIQUE,
    mailbox        text NOT NULL,
    received       bigint NOT NULL,
    size           bigint NOT NULL,
    flags          bigint NOT NULL DEFAULT 0,
    blob           text NOT NULL UNIQUE,
    mailbox_key_id bigint REFERENCES mailbox_key (id),
    wrapped_key    bytea,
    meta           bytea NOT NULL,
    digest         bytea
);
CREATE INDEX store_message_by_mailbox ON store_message (mailbox, seq);
CREATE INDEX store_message_by_mailbox_key ON store_message (mailbox_key_id);

CREATE TABLE audit_anchor (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
