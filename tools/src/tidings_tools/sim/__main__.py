"""``python -m tidings_tools.sim SIMULATION ...``: the simulations without the ``tidings`` CLI."""

from tidings_tools.sim.command import main

if __name__ == "__main__":
    raise SystemExit(main())
