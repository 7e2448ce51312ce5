-- Tidings SQLite schema, version 5: what people expect of a chat.
--
-- Entries other than texts say what they are (kind, NULL for a text), the
-- entry an edit, delete or reaction refers to (target_seq) and whom a text
-- mentions (mentions: " u1 u2 " with "*" for everyone, NULL for nobody).
-- Plain texts leave all three NULL, so their appends write nothing more.
ALTER TABLE messages ADD COLUMN kind TEXT;
ALTER TABLE messages ADD COLUMN target_seq INTEGER;
ALTER TABLE messages ADD COLUMN mentions TEXT;
-- Side entries of a page of targets (view=current); texts are not in it.
CREATE INDEX messages_by_target ON messages (conversation_id, target_seq)
    WHERE target_seq IS NOT NULL;
-- Entries stored before: membership events get their kind (unread counts
-- leave them out). One pass over the messages, at the upgrade only.
UPDATE messages SET kind = json_extract(CAST(content AS TEXT), '$.kind')
 WHERE json_extract(CAST(content AS TEXT), '$.kind') IN ('member_added', 'member_removed');

-- Group settings: what later joiners read, how long entries are kept
-- (NULL: the server's policy; 0: for ever), and what the purge removed.
ALTER TABLE conversations ADD COLUMN history TEXT NOT NULL DEFAULT 'joined'
    CHECK (history IN ('joined', 'full'));
ALTER TABLE conversations ADD COLUMN retention_days INTEGER;
ALTER TABLE conversations ADD COLUMN purged_seq INTEGER NOT NULL DEFAULT 0;

-- Each member's own view: where their reading starts, and their settings
-- (muted_until: ms since the epoch, -1 for ever, NULL not muted). Members
-- before this version joined when the history was whole: they keep it.
ALTER TABLE members ADD COLUMN visible_after INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN muted_until INTEGER;
ALTER TABLE members ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;

-- "Delete for me": entries a user hid, on all their devices.
CREATE TABLE hidden_messages (
    user_id         TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
) WITHOUT ROWID;
