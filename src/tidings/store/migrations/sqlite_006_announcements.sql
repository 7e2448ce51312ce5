-- Tidings SQLite schema, version 6: announcements.
--
-- Bus events an admin command (tidings user disable, tidings conversation
-- create, ...) leaves for a node whose bus is in-process: the node publishes
-- them on its bus within a poll, so the change reaches its open sessions.
CREATE TABLE announcements (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
