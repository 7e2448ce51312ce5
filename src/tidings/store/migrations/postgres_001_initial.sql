-- Tidings PostgreSQL schema, version 1.
--
-- Applied by tidings.store.postgres's migrator in one transaction (under an
-- advisory lock) together with its schema_version row. Ids are text in the
-- "C" collation (byte order, as SQLite sorts them, and cheaper to compare);
-- times are bigint milliseconds since the Unix epoch.

-- One row: the store's epoch (changed by a restore).
CREATE TABLE meta (
    singleton integer PRIMARY KEY CHECK (singleton = 1),
    epoch     text    NOT NULL
);

-- The store-wide version counter (sync tokens compare against it). Versions
-- in flight are tracked by tidings_next_version(); see the module docstring.
CREATE SEQUENCE store_version AS bigint START WITH 1 CACHE 1;

CREATE TABLE users (
    user_id       text COLLATE "C" PRIMARY KEY,
    username      text   NOT NULL,
    password_hash text   NOT NULL,
    created_at    bigint NOT NULL
);
-- "Alice" and "alice" are one account (usernames are ASCII).
CREATE UNIQUE INDEX users_username_ci ON users (lower(username));

-- One login of a user; the bearer token is stored only as its hash.
CREATE TABLE devices (
    device_id  text COLLATE "C" PRIMARY KEY,
    user_id    text COLLATE "C" NOT NULL REFERENCES users (user_id),
    name       text   NOT NULL,
    token_hash text   NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    revoked_at bigint
);
CREATE INDEX devices_by_user ON devices (user_id);

CREATE TABLE conversations (
    conversation_id text COLLATE "C" PRIMARY KEY,
    kind            text   NOT NULL CHECK (kind IN ('direct', 'group')),
    title           text,
    created_by      text COLLATE "C" NOT NULL REFERENCES users (user_id),
    created_at      bigint NOT NULL,
    last_seq        bigint NOT NULL DEFAULT 0,
    -- The store version of the last change (creation or append).
    version         bigint NOT NULL,
    -- "min(user_id)|max(user_id)" for direct conversations, NULL for groups.
    direct_key      text COLLATE "C" UNIQUE
) WITH (fillfactor = 70);  -- room for HOT updates of last_seq/version
CREATE INDEX conversations_by_version ON conversations (version);

-- Member-level cursors are the max over the user's devices (receipts are
-- per member); the per-device delivered cursor lives in device_cursors.
CREATE TABLE members (
    conversation_id text COLLATE "C" NOT NULL REFERENCES conversations (conversation_id),
    user_id         text COLLATE "C" NOT NULL REFERENCES users (user_id),
    role            text   NOT NULL CHECK (role IN ('admin', 'member')),
    delivered_seq   bigint NOT NULL DEFAULT 0,
    read_seq        bigint NOT NULL DEFAULT 0,
    joined_at       bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITH (fillfactor = 80);
CREATE INDEX members_by_user ON members (user_id);

-- Where each device's sync resumes. No foreign key to devices: a cursor of a
-- device id the core made up (e.g. a system actor) is harmless.
CREATE TABLE device_cursors (
    device_id       text COLLATE "C" NOT NULL,
    conversation_id text COLLATE "C" NOT NULL,
    delivered_seq   bigint NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
) WITH (fillfactor = 80);

-- The per-conversation log; UNIQUE (sender_id, client_msg_id) is the
-- idempotency key (its violation is how a racing duplicate is detected).
CREATE TABLE messages (
    conversation_id text COLLATE "C" NOT NULL REFERENCES conversations (conversation_id),
    seq             bigint NOT NULL,
    message_id      text COLLATE "C" NOT NULL UNIQUE,
    sender_id       text COLLATE "C" NOT NULL,
    device_id       text COLLATE "C" NOT NULL,
    client_msg_id   text   NOT NULL,
    ts              bigint NOT NULL,
    content         bytea  NOT NULL,
    PRIMARY KEY (conversation_id, seq),
    CONSTRAINT messages_idempotency UNIQUE (sender_id, client_msg_id)
);

-- Allocate the next store version and mark it "in flight" until this
-- transaction ends: a transaction-level advisory lock keyed by the version
-- (single bigint key, objsubid 1 in pg_locks). The shared session lock on
-- the gate (two-int key 0x7469, 1) makes "nextval + lock" atomic for
-- tidings_safe_version(), which takes the gate exclusively.
CREATE FUNCTION tidings_next_version() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v bigint;
BEGIN
    PERFORM pg_advisory_lock_shared(29801, 1);
    v := nextval('store_version');
    PERFORM pg_advisory_xact_lock_shared(v);
    PERFORM pg_advisory_unlock_shared(29801, 1);
    RETURN v;
END;
$$;

-- The highest version V such that every version <= V is committed (and
-- visible to any snapshot taken after this call returns) or rolled back.
CREATE FUNCTION tidings_safe_version() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    allocated bigint;
    called    boolean;
    pending   bigint;
BEGIN
    PERFORM pg_advisory_lock(29801, 1);
    SELECT last_value, is_called INTO allocated, called FROM store_version;
    IF NOT called THEN
        allocated := allocated - 1;
    END IF;
    SELECT min((l.classid::bigint << 32) | l.objid::bigint) INTO pending
      FROM pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
    PERFORM pg_advisory_unlock(29801, 1);
    RETURN least(allocated, pending - 1);
END;
$$;

-- Raise one of Tidings' own SQLSTATEs (mapped to TidingsError codes in Python).
--   TD404: not found, TD403: not a member, TD400: bad request.

-- Append a message at the next seq of its conversation in one round trip.
-- The conversation row is locked first (UPDATE), which serialises writers of
-- one conversation; membership and the sender's cursors are read after the
-- lock so they are current. A racing duplicate fails the INSERT with a unique
-- violation: the whole transaction (seq bump included) rolls back and the
-- caller returns the stored copy.
CREATE FUNCTION tidings_append(
    p_conversation_id text, p_sender_id text, p_device_id text,
    p_client_msg_id text, p_content bytea, p_ts bigint, p_message_id text,
    OUT conversation_id text, OUT seq bigint, OUT message_id text, OUT ts bigint,
    OUT content bytea, OUT duplicate boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m_delivered bigint;
    m_read      bigint;
    d_delivered bigint;
BEGIN
    SELECT m.conversation_id, m.seq, m.message_id, m.ts, m.content
      INTO conversation_id, seq, message_id, ts, content
      FROM messages AS m
     WHERE m.sender_id = p_sender_id AND m.client_msg_id = p_client_msg_id;
    IF FOUND THEN
        duplicate := true;
        RETURN;
    END IF;
    UPDATE conversations AS c
       SET last_seq = c.last_seq + 1, version = tidings_next_version()
     WHERE c.conversation_id = p_conversation_id
    RETURNING c.last_seq INTO seq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not a member of this conversation' USING ERRCODE = 'TD403';
    END IF;
    SELECT mb.delivered_seq, mb.read_seq INTO m_delivered, m_read
      FROM members AS mb
     WHERE mb.conversation_id = p_conversation_id AND mb.user_id = p_sender_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not a member of this conversation' USING ERRCODE = 'TD403';
    END IF;
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
    duplicate := false;
END;
$$;

-- The sender's cursors follow a new seq only where they stood at seq - 1: a
-- reply to a conversation read to the end keeps it read, and a cursor never
-- skips a message the sender's devices were not given. The member cursors
-- were read after the conversation lock, so they are current.
CREATE FUNCTION tidings_follow_sender(
    p_conversation_id text, p_sender_id text, p_device_id text, p_seq bigint,
    p_delivered bigint, p_read bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_delivered = p_seq - 1 OR p_read = p_seq - 1 THEN
        UPDATE members
           SET delivered_seq = CASE WHEN delivered_seq = p_seq - 1 THEN p_seq
                                    ELSE delivered_seq END,
               read_seq = CASE WHEN read_seq = p_seq - 1 THEN p_seq ELSE read_seq END
         WHERE conversation_id = p_conversation_id AND user_id = p_sender_id;
    END IF;
    IF p_device_id = '' THEN
        RETURN;
    END IF;
    IF p_seq = 1 THEN
        INSERT INTO device_cursors (device_id, conversation_id, delivered_seq)
        VALUES (p_device_id, p_conversation_id, 1)
        ON CONFLICT (device_id, conversation_id) DO UPDATE
           SET delivered_seq = 1 WHERE device_cursors.delivered_seq = 0;
    ELSE
        UPDATE device_cursors
           SET delivered_seq = p_seq
         WHERE device_id = p_device_id AND conversation_id = p_conversation_id
           AND delivered_seq = p_seq - 1;
    END IF;
END;
$$;

-- The ids in p_ids that name no user, in the order given.
CREATE FUNCTION tidings_unknown_users(p_ids text[]) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(i.id ORDER BY i.ord), '{}')
      FROM unnest(p_ids) WITH ORDINALITY AS i (id, ord)
     WHERE NOT EXISTS (SELECT 1 FROM users AS u WHERE u.user_id = i.id);
$$;

-- Create a conversation with its members; a direct one is unique per pair
-- (direct_key): the loser of a concurrent creation returns the winner's row.
CREATE FUNCTION tidings_create_conversation(
    p_conversation_id text, p_kind text, p_title text, p_creator_id text,
    p_creator_role text, p_others text[], p_now bigint, p_direct_key text,
    OUT conversation_id text, OUT kind text, OUT title text, OUT created_by text,
    OUT created_at bigint, OUT last_seq bigint, OUT created boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    unknown text[];
BEGIN
    unknown := tidings_unknown_users(p_creator_id || p_others);
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION 'unknown users: %', array_to_string(unknown, ', ')
            USING ERRCODE = 'TD404';
    END IF;
    IF p_direct_key IS NOT NULL THEN
        SELECT c.conversation_id, c.kind, c.title, c.created_by, c.created_at, c.last_seq
          INTO conversation_id, kind, title, created_by, created_at, last_seq
          FROM conversations AS c WHERE c.direct_key = p_direct_key;
        IF FOUND THEN
            created := false;
            RETURN;
        END IF;
    END IF;
    INSERT INTO conversations AS c (conversation_id, kind, title, created_by, created_at,
                                    last_seq, version, direct_key)
    VALUES (p_conversation_id, p_kind, p_title, p_creator_id, p_now, 0,
            tidings_next_version(), p_direct_key)
    ON CONFLICT (direct_key) DO NOTHING;
    IF NOT FOUND THEN
        -- A concurrent creation of the same pair won (and has committed).
        SELECT c.conversation_id, c.kind, c.title, c.created_by, c.created_at, c.last_seq
          INTO conversation_id, kind, title, created_by, created_at, last_seq
          FROM conversations AS c WHERE c.direct_key = p_direct_key;
        created := false;
        RETURN;
    END IF;
    INSERT INTO members (conversation_id, user_id, role, joined_at)
    SELECT p_conversation_id, p_creator_id, p_creator_role, p_now
    UNION ALL
    SELECT p_conversation_id, o, 'member', p_now FROM unnest(p_others) AS o;
    conversation_id := p_conversation_id;
    kind := p_kind;
    title := p_title;
    created_by := p_creator_id;
    created_at := p_now;
    last_seq := 0;
    created := true;
END;
$$;

-- Add/remove members and append the event in one transaction (see
-- Store.change_members). Returns no row when nothing changes.
CREATE FUNCTION tidings_change_members(
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
    RETURNING c.last_seq INTO seq;
    INSERT INTO messages (conversation_id, seq, message_id, sender_id, device_id,
                          client_msg_id, ts, content)
    VALUES (p_conversation_id, seq, p_message_id, p_sender_id, p_device_id,
            p_client_msg_id, p_ts, p_content);
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

-- Move a member's and a device's cursors forward (never back, clamped to
-- last_seq; read implies delivered). The member row is locked first, then
-- the device row: the same order as appends (conversation, member, device).
CREATE FUNCTION tidings_advance_cursors(
    p_conversation_id text, p_user_id text, p_device_id text,
    p_delivered bigint, p_read bigint,
    OUT delivered_seq bigint, OUT read_seq bigint, OUT moved boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    old_delivered bigint;
    old_read      bigint;
    c_last        bigint;
    want_read     bigint;
    want_delivered bigint;
BEGIN
    SELECT mb.delivered_seq, mb.read_seq, c.last_seq INTO old_delivered, old_read, c_last
      FROM members AS mb
      JOIN conversations AS c ON c.conversation_id = mb.conversation_id
     WHERE mb.conversation_id = p_conversation_id AND mb.user_id = p_user_id
       FOR NO KEY UPDATE OF mb;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not a member of this conversation' USING ERRCODE = 'TD403';
    END IF;
    want_read := greatest(0, least(p_read, c_last));
    want_delivered := greatest(want_read, least(p_delivered, c_last));
    IF want_delivered > 0 AND p_device_id <> '' THEN
        INSERT INTO device_cursors AS dc (device_id, conversation_id, delivered_seq)
        VALUES (p_device_id, p_conversation_id, want_delivered)
        ON CONFLICT (device_id, conversation_id) DO UPDATE
           SET delivered_seq = excluded.delivered_seq
         WHERE excluded.delivered_seq > dc.delivered_seq;
    END IF;
    delivered_seq := greatest(old_delivered, want_delivered);
    read_seq := greatest(old_read, want_read);
    moved := (delivered_seq, read_seq) IS DISTINCT FROM (old_delivered, old_read);
    IF moved THEN
        UPDATE members AS mb
           SET delivered_seq = tidings_advance_cursors.delivered_seq,
               read_seq = tidings_advance_cursors.read_seq
         WHERE mb.conversation_id = p_conversation_id AND mb.user_id = p_user_id;
    END IF;
END;
$$;
