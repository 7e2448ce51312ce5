-- Tidings PostgreSQL schema: restores from backup and what clients report after one.
--
-- Numbered 005 (not 004) on purpose: it depends on nothing after version 3,
-- and the migrator applies files in number order without requiring them to
-- be contiguous.

-- One row per `tidings restore`: the epoch it gave the store, the epoch it
-- replaced, and the window of history that may be lost: from the backup's
-- time (from_ts) to the restore's (to_ts), in ms since the Unix epoch.
CREATE TABLE restores (
    epoch          text COLLATE "C" PRIMARY KEY,
    previous_epoch text COLLATE "C" NOT NULL,
    from_ts        bigint  NOT NULL,
    to_ts          bigint  NOT NULL
);
CREATE INDEX restores_by_time ON restores (to_ts);

-- When a backup copy was taken, written only into the copy (never into the
-- live store); a restore reads it as from_ts and deletes it. `tidings backup`
-- is SQLite-only, so on PostgreSQL it stays empty unless an operator stamps a
-- restored database by hand (docs/reliability.md); both engines answer
-- backup_time() alike.
CREATE TABLE backup_stamp (
    singleton integer PRIMARY KEY CHECK (singleton = 1),
    taken_at  bigint  NOT NULL
);

-- One row per device and epoch that sent a `reconcile` report (a repeated
-- report replaces the previous one), and its per-conversation figures: what
-- the device held beyond the restored server's last_seq.
CREATE TABLE reconcile_reports (
    epoch       text COLLATE "C" NOT NULL,
    device_id   text COLLATE "C" NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    reported_at bigint  NOT NULL,
    PRIMARY KEY (epoch, device_id)
);
CREATE TABLE reconcile_gaps (
    epoch           text COLLATE "C" NOT NULL,
    device_id       text COLLATE "C" NOT NULL,
    conversation_id text COLLATE "C" NOT NULL,
    server_last_seq bigint  NOT NULL,
    held_last_seq   bigint  NOT NULL,
    own             bigint  NOT NULL,
    others          bigint  NOT NULL,
    PRIMARY KEY (epoch, device_id, conversation_id),
    FOREIGN KEY (epoch, device_id) REFERENCES reconcile_reports (epoch, device_id)
);
