"""The trace feature's statements, shared by both engines (``{name}`` is an
engine's placeholder or expression, filled in by ``sqlite.py`` and ``postgres.py``)."""

from __future__ import annotations

COLUMNS = (
    "conversation_id, seq, stage, ts_us, node, user_id, device_id, network, message_id,"
    " client_msg_id, persisted_us, published_us, acked_us, devices, attempt"
)
WIDTH = 15

ROWS = (
    f"SELECT {COLUMNS} FROM trace_events WHERE conversation_id = {{cid}}"
    " AND (seq = {seq} OR (seq > {seq} AND stage IN ('client_acked', 'read')))"
    " ORDER BY ts_us LIMIT {limit}"
)

LOCATE = (
    "SELECT conversation_id, seq FROM messages WHERE message_id = {id}"
    " UNION SELECT conversation_id, seq FROM trace_events"
    " WHERE stage = 'send' AND client_msg_id = {id}"
)

PURGE = "DELETE FROM trace_events WHERE ts_us < {before}"

# The (message, device) pairs of messages acknowledged in the window: the
# devices every 'delivered' or 'synced' row of the message names ({expand}
# turns a row's JSON array into one row per device), and whether a
# 'client_acked' of that device covered it in time.
DELIVERY = """
SELECT w.network, count(*), sum(CASE WHEN EXISTS (
    SELECT 1 FROM trace_events a
    WHERE a.conversation_id = w.conversation_id AND a.seq >= w.seq
      AND a.stage = 'client_acked' AND a.device_id = w.device_id
      AND a.ts_us <= w.acked_us + {within}
) THEN 1 ELSE 0 END)
FROM (
    SELECT DISTINCT s.conversation_id, s.seq, s.acked_us,
        {device} AS device_id, {network} AS network
    FROM trace_events s
    JOIN trace_events d ON d.conversation_id = s.conversation_id AND d.seq = s.seq
        AND d.stage IN ('delivered', 'synced')
    {expand}
    WHERE s.stage = 'send' AND s.acked_us >= {since} AND s.acked_us < {until}
        AND s.ts_us >= {since} - {within}
) w
GROUP BY w.network
"""
