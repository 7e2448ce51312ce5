-- Tidings PostgreSQL schema, version 7: what people expect of a chat (the
-- twin of sqlite_005_messaging.sql).
--
-- Entries other than texts say what they are (kind, NULL for a text), the
-- entry an edit, delete or reaction refers to (target_seq) and whom an entry
-- mentions (mentions: " u1 u2 " with "*" for everyone, NULL for nobody).
-- Plain texts leave all three NULL. Nullable columns without a default
-- rewrite nothing, and the functions of version 6 keep their signatures
-- (the old ones now wrap the new ones), so nodes still running the previous
-- code keep appending during a rolling upgrade.
ALTER TABLE messages ADD COLUMN kind text;
ALTER TABLE messages ADD COLUMN target_seq bigint;
ALTER TABLE messages ADD COLUMN mentions text;
-- Side entries of a page of targets (view=current, redaction); texts are not in it.
CREATE INDEX messages_by_target ON messages (conversation_id, target_seq)
    WHERE target_seq IS NOT NULL;

-- The kind of a membership event, read from its content (NULL for anything
-- else, including content that is not JSON): tidings_change_members keeps
-- its signature, so the kind comes from the content the core always wrote.
CREATE FUNCTION tidings_membership_kind(p_content bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
BEGIN
    -- The bytes '"member_' first (cheap, and outside the block below, which
    -- costs a subtransaction): most entries are texts.
    IF position('\x226d656d6265725f'::bytea IN p_content) = 0 THEN
        RETURN NULL;
    END IF;
    BEGIN
        k := convert_from(p_content, 'UTF8')::jsonb ->> 'kind';
    EXCEPTION WHEN data_exception THEN  -- not UTF-8 or not JSON
        RETURN NULL;
    END;
    RETURN CASE WHEN k IN ('member_added', 'member_removed') THEN k END;
END;
$$;

-- Entries stored before: membership events get their kind (unread counts
-- leave them out). One pass over the messages, at the upgrade only.
UPDATE messages SET kind = tidings_membership_kind(content)
 WHERE tidings_membership_kind(content) IS NOT NULL;

-- Group settings: what later joiners read, how long entries are kept
-- (NULL: the server's policy; 0: for ever), and what the purge removed.
-- history's values are checked by a domain, not a CHECK of the table: a
-- table's CHECK runs on every UPDATE of the row, so on every append's
-- last_seq bump (docs/benchmarks.md, "Figures behind design choices"),
-- while a domain's runs only where a value is written to it.
CREATE DOMAIN tidings_history AS text CHECK (VALUE IN ('joined', 'full'));
ALTER TABLE conversations ADD COLUMN history tidings_history NOT NULL DEFAULT 'joined';
ALTER TABLE conversations ADD COLUMN retention_days integer;
ALTER TABLE conversations ADD COLUMN purged_seq bigint NOT NULL DEFAULT 0;

-- Each member's own view: where their reading starts, and their settings
-- (muted_until: ms since the epoch, -1 for ever, NULL not muted). Members
-- before this version joined when the history was whole: they keep it.
ALTER TABLE members ADD COLUMN visible_after bigint NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN muted_until bigint;
ALTER TABLE members ADD COLUMN archived boolean NOT NULL DEFAULT false;
ALTER TABLE members ADD COLUMN pinned boolean NOT NULL DEFAULT false;

-- "Delete for me": entries a user hid, on all their devices. The second
-- index serves the retention purge, which removes a conversation's prefix.
CREATE TABLE hidden_messages (
    user_id         text COLLATE "C" NOT NULL,
    conversation_id text COLLATE "C" NOT NULL,
    seq             bigint NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
);
CREATE INDEX hidden_messages_by_conversation ON hidden_messages (conversation_id, seq);

-- As in version 6, with what the store must know of an entry beyond its
-- bytes (NewMessage): after the conversation lock and the duplicate and
-- membership checks, a target must be an entry of the conversation that has
-- no target itself (else outcome 'no_target') and was not deleted (else
-- 'target_deleted'); nothing is written then. A redacting entry (a delete
-- for everyone) then scrubs, in this same transaction, the target's content
-- and each edit of it, and clears their mentions. The target check and the
-- scrub run under the conversation lock, as every append does, so an edit
-- and a delete of one target serialise: either the edit comes first and is
-- scrubbed, or it finds the target deleted.
CREATE FUNCTION tidings_append_item(
    p_conversation_id text, p_sender_id text, p_device_id text,
    p_client_msg_id text, p_content bytea, p_ts bigint, p_message_id text,
    p_kind text, p_target bigint, p_redacts boolean, p_mentions text,
    OUT conversation_id text, OUT seq bigint, OUT message_id text, OUT ts bigint,
    OUT content bytea, OUT outcome text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m_delivered bigint;
    m_read      bigint;
    v           bigint;
    t_kind      text;
    t_target    bigint;
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
    IF p_target IS NOT NULL THEN
        SELECT m.kind, m.target_seq INTO t_kind, t_target
          FROM messages AS m
         WHERE m.conversation_id = p_conversation_id AND m.seq = p_target;
        IF NOT FOUND OR t_target IS NOT NULL THEN
            outcome := 'no_target';
            RETURN;
        END IF;
        IF t_kind = 'deleted' THEN
            outcome := 'target_deleted';
            RETURN;
        END IF;
    END IF;
    UPDATE conversations AS c
       SET last_seq = c.last_seq + 1, version = tidings_next_version()
     WHERE c.conversation_id = p_conversation_id
    RETURNING c.last_seq, c.version INTO seq, v;
    INSERT INTO messages (conversation_id, seq, message_id, sender_id, device_id,
                          client_msg_id, ts, content, version, kind, target_seq, mentions)
    VALUES (p_conversation_id, seq, p_message_id, p_sender_id, p_device_id,
            p_client_msg_id, p_ts, p_content, v, p_kind, p_target, p_mentions);
    IF p_redacts THEN
        UPDATE messages AS m
           SET content = convert_to('{"kind":"deleted"}', 'UTF8'), kind = 'deleted',
               mentions = NULL
         WHERE m.conversation_id = p_conversation_id AND m.seq = p_target;
        UPDATE messages AS m
           SET content = convert_to('{"kind":"edit","target":' || p_target || ',"deleted":true}',
                                    'UTF8'),
               mentions = NULL
         WHERE m.conversation_id = p_conversation_id AND m.target_seq = p_target
           AND m.kind = 'edit';
    END IF;
    PERFORM tidings_follow_sender(p_conversation_id, p_sender_id, p_device_id, seq,
                                  m_delivered, m_read);
    conversation_id := p_conversation_id;
    message_id := p_message_id;
    ts := p_ts;
    content := p_content;
    outcome := 'stored';
END;
$$;

-- The version 6 signature, for nodes still running the previous code: a
-- plain text (no kind, target or mentions), through the one implementation.
CREATE OR REPLACE FUNCTION tidings_append_item(
    p_conversation_id text, p_sender_id text, p_device_id text,
    p_client_msg_id text, p_content bytea, p_ts bigint, p_message_id text,
    OUT conversation_id text, OUT seq bigint, OUT message_id text, OUT ts bigint,
    OUT content bytea, OUT outcome text)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM tidings_append_item(p_conversation_id, p_sender_id, p_device_id,
                                      p_client_msg_id, p_content, p_ts, p_message_id,
                                      NULL::text, NULL::bigint, false, NULL::text);
$$;

-- As tidings_append_many of version 3, element i also carrying p_kinds[i],
-- p_targets[i], p_redacts[i] and p_mentions[i] (see tidings_append_item
-- above). Each of these arrays may be NULL as a whole: a batch of plain
-- texts sends four NULLs rather than four arrays of NULLs.
CREATE FUNCTION tidings_append_many(
    p_conversation_ids text[], p_sender_ids text[], p_device_ids text[],
    p_client_msg_ids text[], p_contents bytea[], p_ts bigint[], p_message_ids text[],
    p_kinds text[], p_targets bigint[], p_redacts boolean[], p_mentions text[])
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
                                   p_message_ids[i], p_kinds[i], p_targets[i],
                                   coalesce(p_redacts[i], false), p_mentions[i]) AS a;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- As in version 6, and: a member added to a group whose history is 'joined'
-- reads from the event that added them on (visible_after = the seq before
-- it), with 'full' everything; the event's row gets its membership kind.
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
    c_history   text;
    c_last      bigint;
    unknown     text[];
    adding      text[];
    removing    text[];
    m_delivered bigint;
    m_read      bigint;
    v           bigint;
BEGIN
    -- Lock the conversation first: member changes and appends serialise on it.
    SELECT c.kind, c.history, c.last_seq INTO c_kind, c_history, c_last
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
    INSERT INTO members (conversation_id, user_id, role, joined_at, visible_after)
    SELECT p_conversation_id, a, 'member', p_ts,
           CASE WHEN c_history = 'joined' THEN c_last ELSE 0 END
      FROM unnest(adding) AS a;
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
                          client_msg_id, ts, content, version, kind)
    VALUES (p_conversation_id, seq, p_message_id, p_sender_id, p_device_id,
            p_client_msg_id, p_ts, p_content, v, tidings_membership_kind(p_content));
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

-- The retention purge (RetentionStore.purge_expired): per conversation whose
-- policy (its retention_days, else p_default_days; 0 keeps for ever) has
-- expired entries, remove the prefix up to the highest seq whose ts is
-- before now - days, their hidden marks, and record purged_seq; at most
-- p_max entries in all, so a long backlog goes in several calls (the last
-- conversation reached may be purged part way: still a prefix).
--
-- The highest expired seq is found scanning the primary key backwards from
-- the newest entry, so the cost is the entries still within the policy, not
-- the whole conversation. It is found before the conversation row is locked
-- (appends only add newer entries); purged_seq is re-read under the lock,
-- which a concurrent purge by another node may have moved. The lock is the
-- appends' own, so an edit never lands on a target being removed; it is held
-- until the call commits, so p_max also bounds how long appends to the
-- conversations it purged wait. Each call looks at every conversation with
-- a policy again: a conversation with nothing expired costs the backward
-- scan through its entries within the policy.
CREATE FUNCTION tidings_purge_expired(p_now bigint, p_default_days integer, p_max bigint)
RETURNS TABLE (conversation_id text, purged_seq bigint, entries bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    c        record;
    fresh    bigint;
    done     bigint;
    last     bigint;
    upto     bigint;
    budget   bigint := p_max;
BEGIN
    -- Candidates: a policy, and an oldest held entry that has expired (one
    -- primary-key lookup each; a conversation with nothing expired costs no scan).
    FOR c IN SELECT cv.conversation_id,
                    p_now - coalesce(cv.retention_days, p_default_days)::bigint * 86400000
                        AS cutoff
               FROM conversations AS cv
              WHERE coalesce(cv.retention_days, p_default_days) > 0
                AND cv.last_seq > cv.purged_seq
                AND (SELECT m.ts FROM messages AS m
                      WHERE m.conversation_id = cv.conversation_id
                        AND m.seq = cv.purged_seq + 1)
                    < p_now - coalesce(cv.retention_days, p_default_days)::bigint * 86400000
              ORDER BY cv.conversation_id
    LOOP
        EXIT WHEN budget <= 0;
        SELECT cv.purged_seq, cv.last_seq INTO done, last
          FROM conversations AS cv
         WHERE cv.conversation_id = c.conversation_id
           FOR UPDATE;
        -- The prefix ends before the first entry that has not expired: a walk
        -- over the entries that go anyway.
        SELECT m.seq INTO fresh
          FROM messages AS m
         WHERE m.conversation_id = c.conversation_id AND m.seq > done AND m.ts >= c.cutoff
         ORDER BY m.seq
         LIMIT 1;
        upto := least(coalesce(fresh - 1, last), done + budget);
        CONTINUE WHEN upto <= done;
        DELETE FROM messages AS m
         WHERE m.conversation_id = c.conversation_id AND m.seq > done AND m.seq <= upto;
        GET DIAGNOSTICS entries = ROW_COUNT;
        DELETE FROM hidden_messages AS h
         WHERE h.conversation_id = c.conversation_id AND h.seq <= upto;
        UPDATE conversations AS cv SET purged_seq = upto
         WHERE cv.conversation_id = c.conversation_id;
        budget := budget - entries;
        conversation_id := c.conversation_id;
        purged_seq := upto;
        RETURN NEXT;
    END LOOP;
END;
$$;
