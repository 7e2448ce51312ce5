-- Tidings SQLite schema: restores from backup and what clients report after one.
--
-- Numbered 003 (not 002) on purpose: it depends on nothing after version 1,
-- and the migrator applies files in number order without requiring them to
-- be contiguous.

-- One row per `tidings restore`: the epoch it gave the store, the epoch it
-- replaced, and the window of history that may be lost: from the backup's
-- time (from_ts) to the restore's (to_ts), in ms since the Unix epoch.
CREATE TABLE restores (
    epoch          TEXT    PRIMARY KEY,
    previous_epoch TEXT    NOT NULL,
    from_ts        INTEGER NOT NULL,
    to_ts          INTEGER NOT NULL
);
CREATE INDEX restores_by_time ON restores (to_ts);

-- Written only into the copy that `tidings backup` makes (never into the live
-- store): when that copy was taken. A restore reads it as from_ts and
-- deletes it, so the live store never carries one.
CREATE TABLE backup_stamp (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    taken_at  INTEGER NOT NULL
);

-- One row per device and epoch that sent a `reconcile` report (a repeated
-- report replaces the previous one), and its per-conversation figures: what
-- the device held beyond the restored server's last_seq.
CREATE TABLE reconcile_reports (
    epoch       TEXT    NOT NULL,
    device_id   TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (epoch, device_id)
);
CREATE TABLE reconcile_gaps (
    epoch           TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    server_last_seq INTEGER NOT NULL,
    held_last_seq   INTEGER NOT NULL,
    own             INTEGER NOT NULL,
    others          INTEGER NOT NULL,
    PRIMARY KEY (epoch, device_id, conversation_id),
    FOREIGN KEY (epoch, device_id) REFERENCES reconcile_reports (epoch, device_id)
);
