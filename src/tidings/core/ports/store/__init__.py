"""The store ports: the durable source of truth, one narrow protocol per aggregate.

A store is one database, so each engine implements them all as one class (the
composite :class:`~tidings.core.ports.store.composite.Store`, which only the
composition root, the CLI and the tests name). Everything else declares the
narrow protocol it needs, so a service's signature says which data it may
touch and a test double implements only that:

- :mod:`.accounts` ``AccountStore``: users, credentials, devices and tokens;
- :mod:`.conversations` ``ConversationStore``: conversations and membership;
- :mod:`.messages` ``MessageLog``: appends, history and the change stream;
- :mod:`.cursors` ``CursorStore``: cursors, listings and receipt counts;
- :mod:`.restores` ``RestoreStore``: the epoch, restores and reconcile reports;
- :mod:`.hidden` ``HiddenStore``: each user's hidden messages;
- :mod:`.retention` ``RetentionStore``: the retention purge;
- :mod:`.announcements` ``AnnouncementStore``: admin commands' events for an in-process bus;
- :mod:`.consumers` ``ConsumerStore``: change-log consumer positions and leases;
- :mod:`.lifecycle` ``StoreLifecycle``: start, close, readiness;
- :mod:`.engine` ``EngineAccess``: the database itself, for features' own backends.

Every engine passes the conformance suite, one file per aggregate in
``tests/store/`` (``test_accounts.py``, ``test_conversations.py``,
``test_messages.py``, ``test_cursors.py``, ``test_restores.py``,
``test_changes.py``, ``test_lifecycle.py``), unchanged. Contracts that hold for
every method of every protocol:

- Methods are coroutines, safe to call concurrently.
- A method that raises has changed nothing.
- Failures to reach the database raise ``TidingsError(UNAVAILABLE)`` so that
  clients retry; domain rejections raise the matching code (``not_member``,
  ``not_found``, ``conflict``).

Each module states the contracts of its aggregate.
"""
