-- Tidings PostgreSQL schema, version 3: appends in batches.
--
-- One statement per append was one committed transaction (and WAL flush) per
-- message: ~500 µs of PostgreSQL CPU each under 1:1 load, against ~190 µs
-- sent 500 to a transaction. PostgresStore now sends the appends that are
-- waiting as one call of tidings_append_many. The steps of one append move
-- into tidings_append_item, which reports a non-member instead of raising;
-- tidings_append (one message) keeps its signature and its error as a thin
-- wrapper, so nodes of the previous version keep working beside this one.

-- The steps of one append (see tidings_append in version 1): a known
-- (sender, client_msg_id) returns the stored copy with outcome 'duplicate';
-- a sender who is not a member writes nothing and gets 'not_member'; else
-- the message is stored at the next seq ('stored'). Membership is read after
-- the conversation row is locked, so it is current.
CREATE FUNCTION tidings_append_item(
    p_conversation_id text, p_sender_id text, p_device_id text,
    p_client_msg_id text, p_content bytea, p_ts bigint, p_message_id text,
    OUT conversation_id text, OUT seq bigint, OUT message_id text, OUT ts bigint,
    OUT content bytea, OUT outcome text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m_delivered bigint;
    m_read      bigint;
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
    RETURNING c.last_seq INTO seq;
    INSERT INTO messages (conversation_id, seq, message_id, sender_id, device_id,
                          client_msg_id, ts, content)
    VALUES (p_conversation_id, seq, p_message_id, p_sender_id, p_device_id,
            p_client_msg_id, p_ts, p_content);
    PERFORM tidings_follow_sender(p_conversation_id, p_sender_id, p_device_id, seq,
                                  m_delivered, m_read);
    conversation_id := p_conversation_id;
    message_id := p_message_id;
    ts := p_ts;
    content := p_content;
    outcome := 'stored';
END;
$$;

CREATE OR REPLACE FUNCTION tidings_append(
    p_conversation_id text, p_sender_id text, p_device_id text,
    p_client_msg_id text, p_content bytea, p_ts bigint, p_message_id text,
    OUT conversation_id text, OUT seq bigint, OUT message_id text, OUT ts bigint,
    OUT content bytea, OUT duplicate boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    outcome text;
BEGIN
    SELECT a.conversation_id, a.seq, a.message_id, a.ts, a.content, a.outcome
      INTO conversation_id, seq, message_id, ts, content, outcome
      FROM tidings_append_item(p_conversation_id, p_sender_id, p_device_id,
                               p_client_msg_id, p_content, p_ts, p_message_id) AS a;
    IF outcome = 'not_member' THEN
        RAISE EXCEPTION 'not a member of this conversation' USING ERRCODE = 'TD403';
    END IF;
    duplicate := outcome = 'duplicate';
END;
$$;

-- Many appends in one statement. Element i is (p_conversation_ids[i],
-- p_sender_ids[i], p_device_ids[i], p_client_msg_ids[i], p_contents[i],
-- p_ts[i], p_message_ids[i]); the result has one row per element, ordered by
-- ord = i, with the outcome of tidings_append_item. Elements are appended in
-- input order (the caller keeps each sender's order). The conversation rows
-- are locked first, in key order, so that two nodes' batches never deadlock
-- on them. A duplicate that another transaction is still inserting makes
-- the unique index wait for it and then fails the whole statement (the
-- caller re-sends the batch one element at a time).
CREATE FUNCTION tidings_append_many(
    p_conversation_ids text[], p_sender_ids text[], p_device_ids text[],
    p_client_msg_ids text[], p_contents bytea[], p_ts bigint[], p_message_ids text[])
RETURNS TABLE (ord integer, conversation_id text, seq bigint, message_id text,
               ts bigint, content bytea, outcome text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    i integer;
BEGIN
    PERFORM 1 FROM conversations AS c
     WHERE c.conversation_id = ANY (p_conversation_ids)
     ORDER BY c.conversation_id
       FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_conversation_ids, 1), 0) LOOP
        ord := i;
        SELECT a.conversation_id, a.seq, a.message_id, a.ts, a.content, a.outcome
          INTO conversation_id, seq, message_id, ts, content, outcome
          FROM tidings_append_item(p_conversation_ids[i], p_sender_ids[i], p_device_ids[i],
                                   p_client_msg_ids[i], p_contents[i], p_ts[i],
                                   p_message_ids[i]) AS a;
        RETURN NEXT;
    END LOOP;
END;
$$;
