"""``tidings sim``: simulations that answer capacity and reliability questions with numbers.

Modules: :mod:`~tidings_tools.sim.schedule` (the backoff schedule as pure functions
and its closed-form bounds), :mod:`~tidings_tools.sim.reconnect_storm` (reconnects
after a restart, FM7) and :mod:`~tidings_tools.sim.command` (the CLI).
"""
