"""``python -m tidings.sim SIMULATION ...``: the simulations without the ``tidings`` CLI."""

from tidings.sim.command import main

if __name__ == "__main__":
    raise SystemExit(main())
