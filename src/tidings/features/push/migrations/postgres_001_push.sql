-- Push notifications (features/push): subscriptions, each user's preference,
-- the per-(subscription, conversation) notification state and the VAPID key.

-- One way to reach one device: a Web Push subscription or a signed webhook.
CREATE TABLE push_subscriptions (
    subscription_id text   PRIMARY KEY,
    user_id         text   NOT NULL REFERENCES users (user_id),
    device_id       text   NOT NULL REFERENCES devices (device_id),
    kind            text   NOT NULL CHECK (kind IN ('webpush', 'webhook')),
    -- The push service's endpoint (webpush) or the webhook's URL.
    url             text   NOT NULL,
    p256dh          text,
    auth            text,
    secret          text,
    created_at      bigint NOT NULL,
    UNIQUE (device_id, url)
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id);

CREATE TABLE push_prefs (
    user_id  text    PRIMARY KEY REFERENCES users (user_id),
    previews boolean NOT NULL
);

-- What each subscription has been told of each conversation, and what waits.
-- notified_seq: the highest seq a notification was claimed for (sent, or being
-- sent); pending_seq above it: a notification waits, for pending_count
-- messages since pending_since, due at due_at. sending_from: notified_seq
-- before the claim in flight, to put back if the send fails and is retried.
CREATE TABLE push_state (
    subscription_id text    NOT NULL REFERENCES push_subscriptions (subscription_id)
                            ON DELETE CASCADE,
    conversation_id text    NOT NULL,
    notified_seq    bigint  NOT NULL DEFAULT 0,
    pending_seq     bigint  NOT NULL,
    pending_count   integer NOT NULL,
    pending_mention boolean NOT NULL,
    pending_since   bigint  NOT NULL,
    due_at          bigint  NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    sending_from    bigint,
    PRIMARY KEY (subscription_id, conversation_id)
);
CREATE INDEX push_state_due ON push_state (due_at) WHERE pending_seq > notified_seq;

-- The VAPID key pair every node signs Web Push requests with, made once.
CREATE TABLE push_vapid (
    singleton   integer PRIMARY KEY CHECK (singleton = 1),
    private_pem text    NOT NULL
);
