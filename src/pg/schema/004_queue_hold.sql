-- Held messages (`sealpost queue hold`): a fourth state of `queue_message`, never claimed or
-- flushed until released. The column CHECK of 001 got PostgreSQL's generated name
-- `queue_message_state_check`; it is replaced by one that also allows 'hold' (a held message,
-- like a waiting one, has no lease, which the table CHECK of 001 already requires).
ALTER TABLE queue_message DROP CONSTRAINT queue_message_state_check;
ALTER TABLE queue_message ADD CONSTRAINT queue_message_state_check
    CHECK (state IN ('incoming', 'active', 'deferred', 'hold'));
