-- Tidings SQLite schema, version 4: the change stream and its consumers.
--
-- Every message stored from now on carries the store version its append
-- took: its position in the change stream (Store.changes_after). One writer
-- commits versions in order, so "version > p" never skips a later commit.
-- Messages stored before this version keep NULL and are not in the stream.
ALTER TABLE messages ADD COLUMN version INTEGER;
CREATE INDEX messages_by_version ON messages (version);

-- One row per named consumer (a worker): where it resumes, and the lease
-- that makes one process at a time the active consumer. lease_until is in
-- ms since the Unix epoch; a released lease is 0.
CREATE TABLE change_consumers (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    holder      TEXT    NOT NULL,
    lease_until INTEGER NOT NULL
);
