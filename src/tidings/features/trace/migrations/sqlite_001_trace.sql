-- Lifecycle tracing (features/trace): one row per recorded stage, written in
-- batches off the send path. A 'send' row holds four stages of one send
-- (received at ts_us, persisted_us, published_us, acked_us); a 'delivered' or
-- 'synced' row one write of the message to the devices in `devices` (a JSON
-- array of [user_id, device_id, network]); 'client_acked' and 'read' rows a
-- device's cursor moved to `seq`, covering every seq up to it.
CREATE TABLE trace_events (
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    stage           TEXT    NOT NULL,
    ts_us           INTEGER NOT NULL,
    node            TEXT    NOT NULL,
    user_id         TEXT,
    device_id       TEXT,
    network         TEXT,
    message_id      TEXT,
    client_msg_id   TEXT,
    persisted_us    INTEGER,
    published_us    INTEGER,
    acked_us        INTEGER,
    devices         TEXT,
    attempt         INTEGER
);
CREATE INDEX trace_events_by_message ON trace_events (conversation_id, seq);
CREATE INDEX trace_events_by_time ON trace_events (ts_us);
CREATE INDEX trace_events_by_client_msg_id ON trace_events (client_msg_id)
    WHERE stage = 'send';
