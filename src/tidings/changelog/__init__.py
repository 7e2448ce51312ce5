"""The change log and its workers: search indexing, moderation, push, media
retention and tracing each follow every stored message, in the order the
store committed them, through one mechanism (docs/architecture.md, "The
change log and its workers").

A worker (:class:`~tidings.core.workers.ChangeWorker`) handles batches of
the store's change stream; a :class:`~tidings.changelog.runner.ChangeRunner`
feeds it from its saved position in a task of its own, at least once, and
only while its node holds the worker's lease
(:class:`~tidings.changelog.lease.Lease`), so that a cluster runs each worker
once. :class:`~tidings.changelog.workers.ChangeWorkers` starts and stops a
node's runners with the node.
"""
