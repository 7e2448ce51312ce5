"""``python -m tidings_tools.bench SCENARIO ...``: the benchmark without the ``tidings`` CLI."""

from tidings_tools.bench.command import main

if __name__ == "__main__":
    raise SystemExit(main())
