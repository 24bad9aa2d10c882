-- The mailbox store's message index and blobs (src/store/backend/pg_messages.rs), as the SQLite
-- index and the blob files keep them (src/store/index.rs, folder_index.rs, blobs.rs): folders
-- with their UIDVALIDITY and UIDNEXT, the IMAP columns of message rows, per-mailbox modification
-- sequences, delivery tags, and the sealed blobs. Message metadata stays sealed under mailbox keys
-- and blobs hold the same framed ciphertext as the files; a delivery tag is an HMAC under the
-- mailbox key (a SHA-256 for a mailbox under policy "none").
CREATE TABLE store_folder (
    id          bigserial PRIMARY KEY,
    mailbox     text NOT NULL,
    name        text NOT NULL,
    uidvalidity bigint NOT NULL,
    uidnext     bigint NOT NULL,
    special     text,
    UNIQUE (mailbox, name)
);

-- The highest UIDVALIDITY given to a folder of each mailbox: never given again.
CREATE TABLE store_uidvalidity (
    mailbox text PRIMARY KEY,
    last    bigint NOT NULL
);

-- The last modification sequence given in each mailbox.
CREATE TABLE store_modseq (
    mailbox text PRIMARY KEY,
    last    bigint NOT NULL
);

ALTER TABLE store_message
    ADD COLUMN folder_id bigint REFERENCES store_folder (id),
    ADD COLUMN uid       bigint,
    ADD COLUMN keywords  text NOT NULL DEFAULT '',
    ADD COLUMN modseq    bigint NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX store_message_by_folder_uid ON store_message (folder_id, uid);

CREATE TABLE store_delivery (
    mailbox    text NOT NULL,
    tag        bytea NOT NULL,
    message_id text NOT NULL,
    created    bigint NOT NULL,
    PRIMARY KEY (mailbox, tag)
);
CREATE INDEX store_delivery_by_created ON store_delivery (created);

-- One sealed blob per row: the framed bytes of a blob file (header, then 64 KiB AES-GCM chunks).
-- Stored uncompressed (ciphertext does not compress), which also lets a slice be read alone.
CREATE TABLE store_blob (
    name text PRIMARY KEY,
    data bytea NOT NULL
);
ALTER TABLE store_blob ALTER COLUMN data SET STORAGE EXTERNAL;

-- Every node keeps its own audit log file: the anchor of each is kept apart, by node id.
ALTER TABLE audit_anchor DROP COLUMN id;
ALTER TABLE audit_anchor ADD COLUMN node text NOT NULL DEFAULT '';
ALTER TABLE audit_anchor ADD PRIMARY KEY (node);
