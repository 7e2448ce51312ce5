-- Tidings PostgreSQL schema, version 8: announcements.
--
-- Bus events an admin command leaves for a node whose bus is in-process
-- (a single node on PostgreSQL without Redis); with a Redis bus commands
-- publish directly and this table stays empty.
CREATE TABLE announcements (
    id         bigserial PRIMARY KEY,
    topic      text   NOT NULL,
    payload    bytea  NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX announcements_by_time ON announcements (created_at);
