-- Tidings PostgreSQL schema, version 6: the change stream and its consumers.
--
-- Every message stored from now on carries the store version its append
-- took (tidings_next_version): its position in the change stream. Versions
-- commit out of order, so Store.changes_after reads only up to
-- tidings_safe_version(), as sync tokens do. Messages stored before this
-- version keep NULL and are not in the stream. Adding a nullable column
-- rewrites nothing; the appends of nodes still running version 5 code go
-- through the functions below as soon as this commits.
ALTER TABLE messages ADD COLUMN version bigint;
CREATE INDEX messages_by_version ON messages (version);

-- One row per named consumer (a worker): where it resumes, and the lease
-- that makes one node at a time the active consumer. lease_until is in ms
-- since the Unix epoch by the database's clock (nodes' clocks may differ);
-- a released lease is 0.
CREATE TABLE change_consumers (
    name        text COLLATE "C" PRIMARY KEY,
    position    bigint NOT NULL,
    holder      text   NOT NULL,
    lease_until bigint NOT NULL
);

-- As in version 3, and the message row keeps the version its append took.
CREATE OR REPLACE FUNCTION tidings_append_item(
    p_conversation_id text, p_sender_id text, p_device_id text,
    p_client_msg_id text, p_content bytea, p_ts bigint, p_message_id text,
    OUT conversation_id text, OUT seq bigint, OUT message_id text, OUT ts bigint,
    OUT content bytea, OUT outcome text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m_delivered bigint;
    m_read      bigint;
    v           bigint;
BEGIN
    SELECT m.conversation_id, m.seq, m.message_id, m.ts, m.content
      INTO conversation_id, seq, message_id, ts, content
      FROM messages AS m
     WHERE m.sender_id = p_sender_id AND m.client_msg_id = p_client_msg_id;
    IF FOUND THEN
        outcome := 'duplicate';
        RETURN;
    END IF;
    PERFORM 1 FROM conversations AS c
     WHERE c.conversation_id = p_conversation_id
       FOR UPDATE;
    SELECT mb.delivered_seq, mb.read_seq INTO m_delivered, m_read
      FROM members AS mb
     WHERE mb.conversation_id = p_conversation_id AND mb.user_id = p_sender_id;
    IF NOT FOUND THEN
        outcome := 'not_member';
        RETURN;
    END IF;
    UPDATE conversations AS c
       SET last_seq = c.last_seq + 1, version = tidings_next_version()
     WHERE c.conversation_id = p_conversation_id
    RETURNING c.last_seq, c.version INTO seq, v;
    INSERT INTO messages (conversation_id, seq, message_id, sender_id, device_id,
                          client_msg_id, ts, content, version)
    VALUES (p_conversation_id, seq, p_message_id, p_sender_id, p_device_id,
            p_client_msg_id, p_ts, p_content, v);
    PERFORM tidings_follow_sender(p_conversation_id, p_sender_id, p_device_id, seq,
                                  m_delivered, m_read);
    conversation_id := p_conversation_id;
    message_id := p_message_id;
    ts := p_ts;
    content := p_content;
    outcome := 'stored';
END;
$$;

-- As in version 1, and the event's row keeps the version its append took.
CREATE OR REPLACE FUNCTION tidings_change_members(
    p_conversation_id text, p_add text[], p_remove text[],
    p_sender_id text, p_device_id text, p_client_msg_id text, p_content bytea,
    p_ts bigint, p_message_id text,
    OUT conversation_id text, OUT seq bigint, OUT message_id text, OUT ts bigint,
    OUT content bytea, OUT duplicate boolean)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c_kind      text;
    unknown     text[];
    adding      text[];
    removing    text[];
    m_delivered bigint;
    m_read      bigint;
    v           bigint;
BEGIN
    -- Lock the conversation first: member changes and appends serialise on it.
    SELECT c.kind, c.last_seq INTO c_kind, seq
      FROM conversations AS c WHERE c.conversation_id = p_conversation_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown conversation' USING ERRCODE = 'TD404';
    END IF;
    IF c_kind = 'direct' THEN
        RAISE EXCEPTION 'the members of a direct conversation are fixed'
            USING ERRCODE = 'TD400';
    END IF;
    SELECT m.conversation_id, m.seq, m.message_id, m.ts, m.content
      INTO conversation_id, seq, message_id, ts, content
      FROM messages AS m
     WHERE m.sender_id = p_sender_id AND m.client_msg_id = p_client_msg_id;
    IF FOUND THEN
        duplicate := true;
        RETURN NEXT;
        RETURN;
    END IF;
    unknown := tidings_unknown_users(p_add || p_remove);
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION 'unknown users: %', array_to_string(unknown, ', ')
            USING ERRCODE = 'TD404';
    END IF;
    SELECT coalesce(array_agg(a.id ORDER BY a.ord), '{}') INTO adding
      FROM unnest(p_add) WITH ORDINALITY AS a (id, ord)
     WHERE NOT EXISTS (SELECT 1 FROM members AS mb
                        WHERE mb.conversation_id = p_conversation_id AND mb.user_id = a.id);
    SELECT coalesce(array_agg(r.id), '{}') INTO removing
      FROM unnest(p_remove) AS r (id)
     WHERE EXISTS (SELECT 1 FROM members AS mb
                    WHERE mb.conversation_id = p_conversation_id AND mb.user_id = r.id);
    IF cardinality(adding) = 0 AND cardinality(removing) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO members (conversation_id, user_id, role, joined_at)
    SELECT p_conversation_id, a, 'member', p_ts FROM unnest(adding) AS a;
    DELETE FROM members AS mb
     WHERE mb.conversation_id = p_conversation_id AND mb.user_id = ANY (removing);
    DELETE FROM device_cursors AS dc
     WHERE dc.conversation_id = p_conversation_id
       AND dc.device_id IN (SELECT d.device_id FROM devices AS d
                             WHERE d.user_id = ANY (removing));
    UPDATE conversations AS c
       SET last_seq = c.last_seq + 1, version = tidings_next_version()
     WHERE c.conversation_id = p_conversation_id
    RETURNING c.last_seq, c.version INTO seq, v;
    INSERT INTO messages (conversation_id, seq, message_id, sender_id, device_id,
                          client_msg_id, ts, content, version)
    VALUES (p_conversation_id, seq, p_message_id, p_sender_id, p_device_id,
            p_client_msg_id, p_ts, p_content, v);
    -- The sender may have removed themself: then there are no cursors to move.
    SELECT mb.delivered_seq, mb.read_seq INTO m_delivered, m_read
      FROM members AS mb
     WHERE mb.conversation_id = p_conversation_id AND mb.user_id = p_sender_id;
    IF FOUND THEN
        PERFORM tidings_follow_sender(p_conversation_id, p_sender_id, p_device_id, seq,
                                      m_delivered, m_read);
    END IF;
    conversation_id := p_conversation_id;
    message_id := p_message_id;
    ts := p_ts;
    content := p_content;
    duplicate := false;
    RETURN NEXT;
END;
$$;
