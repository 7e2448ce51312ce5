"""``tidings sim``: simulations that answer capacity and reliability questions with numbers.

Modules: :mod:`~tidings.sim.schedule` (the backoff schedule as pure functions
and its closed-form bounds), :mod:`~tidings.sim.reconnect_storm` (reconnects
after a restart, FM7) and :mod:`~tidings.sim.command` (the CLI).
"""
