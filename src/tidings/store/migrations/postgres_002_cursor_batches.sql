-- Tidings PostgreSQL schema, version 2: cursor moves in batches.
--
-- Every member's `delivered` ack is one cursor move; a message to a group of
-- 1000 makes 1000 of them within milliseconds. One statement (and one
-- committed transaction, with its WAL flush) each made them queue ahead of
-- the message appends. PostgresStore now sends the moves that are waiting as
-- one call of tidings_advance_cursors_many; tidings_advance_cursors (one
-- move) is kept, with its signature and error, as a batch of one.

-- Move many members' and devices' cursors forward in one statement, with the
-- exact rules of a single move (forward only, clamped to last_seq, read
-- implies delivered; the member row is locked first, then the device row).
--
-- Element i is (p_conversation_ids[i], p_user_ids[i], p_device_ids[i],
-- p_delivered[i], p_read[i]); the result has one row per element, ordered by
-- ord = i. A non-member's element gets not_member = true (and NULL cursors)
-- instead of an error, so that the other elements of the batch still apply:
-- no exception block, hence no subtransaction per element.
--
-- Elements are applied in input order: when a member (or a device) appears
-- several times, each element's row shows the member's cursors right after
-- that element, and moved says whether that element moved them.
--
-- Locking: the loop locks every member row of the batch in key order
-- (conversation_id, user_id), one primary-key lookup each, and reads the
-- cursors under the lock; the device rows are then written in key order
-- (device_id, conversation_id). Every batch takes its locks members-first,
-- each kind in one global order, so two nodes' batches cannot deadlock each
-- other (and appends lock at most one member and then one device row, the
-- same way round). The final statement runs in a later snapshot than the
-- locks were granted in (plpgsql, READ COMMITTED), so the member rows it
-- writes are the ones read under the lock, and only those: a member added in
-- between is not touched (it was not a member when the batch looked).
--
-- Why a loop rather than one locking SELECT over all keys: the planner's
-- choice for that join depends on statistics, and on a freshly created
-- group (no ANALYZE yet) it scanned the whole conversation's member rows for
-- every key, about 5x the CPU of the loop for 110 keys (measured: 20 ms
-- against 4 ms per batch; with statistics both cost about the same).
CREATE FUNCTION tidings_advance_cursors_many(
    p_conversation_ids text[], p_user_ids text[], p_device_ids text[],
    p_delivered bigint[], p_read bigint[])
RETURNS TABLE (ord bigint, delivered_seq bigint, read_seq bigint, moved boolean,
               not_member boolean)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    l_conversation text[];
    l_user         text[];
    l_delivered    bigint[];
    l_read         bigint[];
    l_last         bigint[];
    k              record;
    k_delivered    bigint;
    k_read         bigint;
    k_last         bigint;
BEGIN
    FOR k IN SELECT DISTINCT i.conversation_id COLLATE "C" AS conversation_id,
                             i.user_id COLLATE "C" AS user_id
               FROM unnest(p_conversation_ids, p_user_ids) AS i (conversation_id, user_id)
              ORDER BY 1, 2
    LOOP
        SELECT mb.delivered_seq, mb.read_seq, c.last_seq INTO k_delivered, k_read, k_last
          FROM members AS mb
          JOIN conversations AS c ON c.conversation_id = mb.conversation_id
         WHERE mb.conversation_id = k.conversation_id AND mb.user_id = k.user_id
           FOR NO KEY UPDATE OF mb;
        IF FOUND THEN
            l_conversation := array_append(l_conversation, k.conversation_id);
            l_user := array_append(l_user, k.user_id);
            l_delivered := array_append(l_delivered, k_delivered);
            l_read := array_append(l_read, k_read);
            l_last := array_append(l_last, k_last);
        END IF;
    END LOOP;

    RETURN QUERY
    WITH input AS (
        SELECT i.ord, i.conversation_id COLLATE "C" AS conversation_id,
               i.user_id COLLATE "C" AS user_id, i.device_id COLLATE "C" AS device_id,
               coalesce(i.delivered, 0) AS delivered, coalesce(i.read, 0) AS read
          FROM unnest(p_conversation_ids, p_user_ids, p_device_ids, p_delivered, p_read)
               WITH ORDINALITY AS i (conversation_id, user_id, device_id, delivered, read, ord)
    ),
    locked AS (
        SELECT l.conversation_id COLLATE "C" AS conversation_id, l.user_id COLLATE "C" AS user_id,
               l.delivered_seq, l.read_seq, l.last_seq
          FROM unnest(l_conversation, l_user, l_delivered, l_read, l_last)
               AS l (conversation_id, user_id, delivered_seq, read_seq, last_seq)
    ),
    -- What each element asks for, clamped to last_seq; read implies delivered.
    wanted AS (
        SELECT i.ord, i.conversation_id, i.user_id, i.device_id,
               l.delivered_seq AS old_delivered, l.read_seq AS old_read,
               greatest(0, least(i.read, l.last_seq)) AS want_read,
               greatest(0, least(i.read, l.last_seq), least(i.delivered, l.last_seq))
                   AS want_delivered
          FROM input AS i
          JOIN locked AS l ON l.conversation_id = i.conversation_id AND l.user_id = i.user_id
    ),
    -- The member's cursors before and after each element, in input order
    -- (max over an empty frame is NULL, which greatest() ignores).
    stepped AS (
        SELECT w.ord, w.conversation_id, w.user_id,
               greatest(w.old_delivered, max(w.want_delivered) OVER upto) AS after_delivered,
               greatest(w.old_read, max(w.want_read) OVER upto) AS after_read,
               greatest(w.old_delivered, max(w.want_delivered) OVER earlier) AS before_delivered,
               greatest(w.old_read, max(w.want_read) OVER earlier) AS before_read
          FROM wanted AS w
        WINDOW upto AS (PARTITION BY w.conversation_id, w.user_id ORDER BY w.ord
                        ROWS UNBOUNDED PRECEDING),
               earlier AS (PARTITION BY w.conversation_id, w.user_id ORDER BY w.ord
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ),
    member_writes AS (
        UPDATE members AS mb
           SET delivered_seq = f.delivered, read_seq = f.read
          FROM (SELECT s.conversation_id, s.user_id,
                       max(s.after_delivered) AS delivered, max(s.after_read) AS read
                  FROM stepped AS s
                 GROUP BY s.conversation_id, s.user_id) AS f
         WHERE mb.conversation_id = f.conversation_id AND mb.user_id = f.user_id
           AND (mb.delivered_seq, mb.read_seq) IS DISTINCT FROM (f.delivered, f.read)
    ),
    device_writes AS (
        INSERT INTO device_cursors AS dc (device_id, conversation_id, delivered_seq)
        SELECT w.device_id, w.conversation_id, max(w.want_delivered)
          FROM wanted AS w
         WHERE w.want_delivered > 0 AND w.device_id <> ''
         GROUP BY w.device_id, w.conversation_id
         ORDER BY w.device_id, w.conversation_id
        ON CONFLICT (device_id, conversation_id) DO UPDATE
           SET delivered_seq = excluded.delivered_seq
         WHERE excluded.delivered_seq > dc.delivered_seq
    )
    SELECT i.ord, s.after_delivered, s.after_read,
           coalesce((s.after_delivered, s.after_read)
                    IS DISTINCT FROM (s.before_delivered, s.before_read), false),
           s.ord IS NULL
      FROM input AS i
      LEFT JOIN stepped AS s ON s.ord = i.ord
     ORDER BY i.ord;
END;
$$;

-- One move: a batch of one, raising TD403 for a non-member as before.
CREATE OR REPLACE FUNCTION tidings_advance_cursors(
    p_conversation_id text, p_user_id text, p_device_id text,
    p_delivered bigint, p_read bigint,
    OUT delivered_seq bigint, OUT read_seq bigint, OUT moved boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    outsider boolean;
BEGIN
    SELECT r.delivered_seq, r.read_seq, r.moved, r.not_member
      INTO delivered_seq, read_seq, moved, outsider
      FROM tidings_advance_cursors_many(ARRAY[p_conversation_id], ARRAY[p_user_id],
                                        ARRAY[p_device_id], ARRAY[p_delivered],
                                        ARRAY[p_read]) AS r;
    IF outsider THEN
        RAISE EXCEPTION 'not a member of this conversation' USING ERRCODE = 'TD403';
    END IF;
END;
$$;
