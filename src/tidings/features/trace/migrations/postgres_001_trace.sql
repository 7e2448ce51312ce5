-- Lifecycle tracing (features/trace): see sqlite_001_trace.sql for the rows.
-- Rows arrive in time order, so a BRIN index serves the purge and the
-- delivery rate's window at almost no cost per insert.
CREATE TABLE trace_events (
    conversation_id text   NOT NULL,
    seq             bigint NOT NULL,
    stage           text   NOT NULL,
    ts_us           bigint NOT NULL,
    node            text   NOT NULL,
    user_id         text,
    device_id       text,
    network         text,
    message_id      text,
    client_msg_id   text,
    persisted_us    bigint,
    published_us    bigint,
    acked_us        bigint,
    devices         text,
    attempt         integer
);
CREATE INDEX trace_events_by_message ON trace_events (conversation_id, seq);
CREATE INDEX trace_events_by_time ON trace_events USING brin (ts_us);
CREATE INDEX trace_events_by_client_msg_id ON trace_events (client_msg_id)
    WHERE stage = 'send';
