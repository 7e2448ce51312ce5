"""Store tests: the backend-independent conformance suite and backend specifics."""
