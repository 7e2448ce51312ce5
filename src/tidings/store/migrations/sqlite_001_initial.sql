-- Tidings SQLite schema, version 1.
--
-- Applied by tidings.store.sqlite's migrator inside one transaction together
-- with its schema_version row. Ids are TEXT (prefixed, time-ordered: see
-- tidings.core.ids), times are INTEGER milliseconds since the Unix epoch.

-- One row: the store's epoch (changed by a restore) and the store-wide
-- version counter that every append bumps (sync tokens compare against it).
CREATE TABLE meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    epoch     TEXT    NOT NULL,
    version   INTEGER NOT NULL
);

CREATE TABLE users (
    user_id       TEXT    PRIMARY KEY,
    -- NOCASE: "Alice" and "alice" are one account (usernames are ASCII).
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- One login of a user; the bearer token is stored only as its hash.
CREATE TABLE devices (
    device_id  TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (user_id),
    name       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX devices_by_user ON devices (user_id);

CREATE TABLE conversations (
    conversation_id TEXT    PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    title           TEXT,
    created_by      TEXT    NOT NULL REFERENCES users (user_id),
    created_at      INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    -- The store version of the last change (creation or append).
    version         INTEGER NOT NULL,
    -- "min(user_id)|max(user_id)" for direct conversations, NULL for groups:
    -- makes a direct conversation unique per pair whatever the order asked.
    direct_key      TEXT    UNIQUE
);
CREATE INDEX conversations_by_version ON conversations (version);

-- Member-level cursors are the max over the user's devices (receipts are
-- per member); the per-device delivered cursor lives in device_cursors.
CREATE TABLE members (
    conversation_id TEXT    NOT NULL REFERENCES conversations (conversation_id),
    user_id         TEXT    NOT NULL REFERENCES users (user_id),
    role            TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
    delivered_seq   INTEGER NOT NULL DEFAULT 0,
    read_seq        INTEGER NOT NULL DEFAULT 0,
    joined_at       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id);

-- Where each device's sync resumes. No foreign key to devices: a cursor of a
-- device id the core made up (e.g. a system actor) is harmless.
CREATE TABLE device_cursors (
    device_id       TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    delivered_seq   INTEGER NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
) WITHOUT ROWID;

-- The per-conversation log. Clustered on (conversation_id, seq) because every
-- read is a seq range of one conversation; UNIQUE (sender_id, client_msg_id)
-- is the idempotency key.
CREATE TABLE messages (
    conversation_id TEXT    NOT NULL REFERENCES conversations (conversation_id),
    seq             INTEGER NOT NULL,
    message_id      TEXT    NOT NULL UNIQUE,
    sender_id       TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    client_msg_id   TEXT    NOT NULL,
    ts              INTEGER NOT NULL,
    content         BLOB    NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (sender_id, client_msg_id)
) WITHOUT ROWID;
