-- Push notifications (features/push): subscriptions, each user's preference,
-- the per-(subscription, conversation) notification state and the VAPID key.

-- One way to reach one device: a Web Push subscription or a signed webhook.
CREATE TABLE push_subscriptions (
    subscription_id TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL REFERENCES users (user_id),
    device_id       TEXT    NOT NULL REFERENCES devices (device_id),
    kind            TEXT    NOT NULL CHECK (kind IN ('webpush', 'webhook')),
    -- The push service's endpoint (webpush) or the webhook's URL.
    url             TEXT    NOT NULL,
    p256dh          TEXT,
    auth            TEXT,
    secret          TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (device_id, url)
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id);

CREATE TABLE push_prefs (
    user_id  TEXT    PRIMARY KEY REFERENCES users (user_id),
    previews INTEGER NOT NULL
) WITHOUT ROWID;

-- What each subscription has been told of each conversation, and what waits.
-- notified_seq: the highest seq a notification was claimed for (sent, or being
-- sent); pending_seq above it: a notification waits, for pending_count
-- messages since pending_since, due at due_at. sending_from: notified_seq
-- before the claim in flight, to put back if the send fails and is retried.
CREATE TABLE push_state (
    subscription_id TEXT    NOT NULL REFERENCES push_subscriptions (subscription_id)
                            ON DELETE CASCADE,
    conversation_id TEXT    NOT NULL,
    notified_seq    INTEGER NOT NULL DEFAULT 0,
    pending_seq     INTEGER NOT NULL,
    pending_count   INTEGER NOT NULL,
    pending_mention INTEGER NOT NULL,
    pending_since   INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    sending_from    INTEGER,
    PRIMARY KEY (subscription_id, conversation_id)
) WITHOUT ROWID;
CREATE INDEX push_state_due ON push_state (due_at) WHERE pending_seq > notified_seq;

-- The VAPID key pair every node signs Web Push requests with, made once.
CREATE TABLE push_vapid (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    private_pem TEXT    NOT NULL
);
