"""The interfaces the core needs from the outside, owned by the core.

Backends (``tidings.store``, ``tidings.bus``, ``tidings.presence``) implement
them; the core and the transports depend on these protocols only, so the
dependency arrows point inward (checked by import-linter in ``./scripts/test``).
"""
