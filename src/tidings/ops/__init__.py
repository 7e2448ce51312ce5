"""Operator tasks behind the admin commands, kept out of the CLI so that any
front end (the ``tidings`` command, a test, a future admin API) calls the same code."""
