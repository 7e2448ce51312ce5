"""The ``tidings`` command: serve, migrate, backup and restore, accounts,
conversations, benchmarks and simulations (``tidings --help``)."""

from tidings.cli.main import main

__all__ = ["main"]
